package otlp

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Metric names. An edge is a (client, server) pair of endpoints at the
// configured level; its attributes are the endpoints' resource attributes
// prefixed with weft.client. and weft.server. (the semantic conventions
// have no edge attributes, and their client.*/server.* namespaces mean a
// socket address), plus network.transport and server.port (TCP) or
// server.address (the unix socket path).
const (
	MetricEdgeCalls    = "weft.edge.calls"
	MetricEdgeErrors   = "weft.edge.errors"
	MetricEdgeBytes    = "weft.edge.bytes"
	MetricEdgeDuration = "weft.edge.duration"

	MetricPipelineEventsIn    = "weft.pipeline.events_in"
	MetricPipelineAcked       = "weft.pipeline.acked"
	MetricPipelineDLQ         = "weft.pipeline.dlq"
	MetricPipelineRedelivered = "weft.pipeline.redelivered"
	MetricPipelineErrors      = "weft.pipeline.export_errors"
	MetricPipelineLag         = "weft.pipeline.lag"
	MetricPipelineUnconfirmed = "weft.pipeline.unconfirmed_calls"
)

// Edge attribute prefixes.
const (
	PrefixClient = "weft.client."
	PrefixServer = "weft.server."
)

// edgeKey identifies an edge attribute set for the cache.
type edgeKey struct {
	client, server string // pod uid + container id (+ exe outside pods)
	transport      schema.Transport
	port           uint32
	path           string
	errno          int32
}

// edgeMetrics records per-edge metrics. Series are bounded by the
// MeterProvider's cardinality limit; the attribute-set cache by maxSets.
type edgeMetrics struct {
	provider *sdkmetric.MeterProvider
	calls    metric.Int64Counter
	errors   metric.Int64Counter
	bytes    metric.Int64Counter
	duration metric.Float64Histogram
	// unconfirmed counts calls left out of the edge metrics because the
	// server did not confirm their message's ack (see Stage.ackAndRecord).
	unconfirmed metric.Int64Counter
	level       string

	mu   sync.Mutex
	sets map[edgeKey]attribute.Set

	lag sync.Map // stream name → *atomic.Int64
}

var (
	dirTransmit = attribute.NewSet(semconv.NetworkIODirectionTransmit)
	dirReceive  = attribute.NewSet(semconv.NetworkIODirectionReceive)
)

func newEdgeMetrics(reader sdkmetric.Reader, cfg MetricsConfig, res *resource.Resource, counters *stage.Counters) (*edgeMetrics, error) {
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(reader),
		sdkmetric.WithResource(res),
		sdkmetric.WithCardinalityLimit(cfg.CardinalityLimit),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: MetricEdgeDuration},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{
				Boundaries: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800},
			}},
		)),
	)
	meter := mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	m := &edgeMetrics{provider: mp, level: cfg.Level, sets: map[edgeKey]attribute.Set{}}
	var err error
	if m.calls, err = meter.Int64Counter(MetricEdgeCalls, metric.WithUnit("{call}"), metric.WithDescription("Calls (connections) between two endpoints, counted at close.")); err != nil {
		return nil, err
	}
	if m.errors, err = meter.Int64Counter(MetricEdgeErrors, metric.WithUnit("{call}"), metric.WithDescription("Calls that failed (a refused or timed-out connect), by error.type.")); err != nil {
		return nil, err
	}
	if m.bytes, err = meter.Int64Counter(MetricEdgeBytes, metric.WithUnit("By"), metric.WithDescription("Bytes carried by calls; network.io.direction is the client's view: transmit is client to server.")); err != nil {
		return nil, err
	}
	if m.unconfirmed, err = meter.Int64Counter(MetricPipelineUnconfirmed, metric.WithUnit("{call}"), metric.WithDescription("Calls left out of the edge metrics: the server did not confirm their message's ack, so counting them could count them twice.")); err != nil {
		return nil, err
	}
	if m.duration, err = meter.Float64Histogram(MetricEdgeDuration, metric.WithUnit("s"), metric.WithDescription("Duration of calls, connect to close.")); err != nil {
		return nil, err
	}

	observe := func(name, desc string, v func(stage.Snapshot) uint64) error {
		_, err := meter.Int64ObservableCounter(name, metric.WithDescription(desc),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(int64(v(counters.Snapshot())))
				return nil
			}))
		return err
	}
	for _, c := range []struct {
		name, desc string
		v          func(stage.Snapshot) uint64
	}{
		{MetricPipelineEventsIn, "Events (calls, process events) the exporter consumed.", func(s stage.Snapshot) uint64 { return s.EventsIn }},
		{MetricPipelineAcked, "Stream messages acked after the backend accepted them.", func(s stage.Snapshot) uint64 { return s.Acked }},
		{MetricPipelineDLQ, "Stream messages sent to the DLQ.", func(s stage.Snapshot) uint64 { return s.DLQ }},
		{MetricPipelineRedelivered, "Stream messages delivered more than once.", func(s stage.Snapshot) uint64 { return s.Redelivered }},
		{MetricPipelineErrors, "Failed export attempts (retried).", func(s stage.Snapshot) uint64 { return s.Errors }},
	} {
		if err := observe(c.name, c.desc, c.v); err != nil {
			return nil, err
		}
	}
	_, err = meter.Int64ObservableGauge(MetricPipelineLag, metric.WithUnit("{message}"),
		metric.WithDescription("Messages in the input stream not yet delivered to the exporter."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			m.lag.Range(func(k, v any) bool {
				o.Observe(v.(*atomic.Int64).Load(), metric.WithAttributes(attribute.String("weft.stream", k.(string))))
				return true
			})
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// setLag records the pending count of stream's consumer.
func (m *edgeMetrics) setLag(stream string, n uint64) {
	v, _ := m.lag.LoadOrStore(stream, &atomic.Int64{})
	v.(*atomic.Int64).Store(int64(n))
}

// record adds calls to the edge metrics. The stage calls it once the
// server confirmed the ack of the calls' message, so a redelivered or
// restarted message is never counted twice.
func (m *edgeMetrics) record(ctx context.Context, calls []*schema.Call) {
	for _, c := range calls {
		set := m.attributes(c)
		opt := metric.WithAttributeSet(set)
		// A connection reported while open counts once (its OPEN) and
		// adds its bytes since its previous emission (schema.Counts).
		count, sent, received := schema.Counts(c)
		if count > 0 {
			m.calls.Add(ctx, int64(count), opt)
		}
		if c.GetErrno() != 0 {
			m.errors.Add(ctx, 1, opt)
			continue
		}
		if sent > 0 {
			m.bytes.Add(ctx, int64(sent), opt, metric.WithAttributeSet(dirTransmit))
		}
		if received > 0 {
			m.bytes.Add(ctx, int64(received), opt, metric.WithAttributeSet(dirReceive))
		}
		if st := c.GetState(); st == schema.CallState_CALL_STATE_OPEN || st == schema.CallState_CALL_STATE_PROGRESS {
			continue // its duration is known at its close
		}
		if e, s := c.GetEndUnixNano(), c.GetStartUnixNano(); e >= s {
			m.duration.Record(ctx, float64(e-s)/1e9, opt)
		}
	}
}

func endpointKey(ep *schema.Endpoint) string {
	t := ep.GetTask()
	k := podUID(ep.GetPod(), t) + "/" + containerID(ep.GetContainer(), t)
	if k == "/" {
		k += ep.GetNode() + "/" + t.GetExe()
	}
	return k
}

func (m *edgeMetrics) attributes(c *schema.Call) attribute.Set {
	key := edgeKey{
		client: endpointKey(c.GetClient()), server: endpointKey(c.GetServer()),
		transport: c.GetTransport(), port: c.GetPort(), path: c.GetPath(), errno: c.GetErrno(),
	}
	m.mu.Lock()
	set, ok := m.sets[key]
	m.mu.Unlock()
	if ok {
		return set
	}
	var attrs []attribute.KeyValue
	attrs = appendEdgeEndpoint(attrs, PrefixClient, c.GetClient(), m.level)
	attrs = appendEdgeEndpoint(attrs, PrefixServer, c.GetServer(), m.level)
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		attrs = append(attrs, semconv.NetworkTransportUnix, semconv.ServerAddress(c.GetPath()))
	} else {
		attrs = append(attrs, semconv.NetworkTransportTCP, semconv.ServerPort(int(serverPort(c))))
	}
	if e := c.GetErrno(); e != 0 {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errnoName(e)))
	}
	set = attribute.NewSet(attrs...)
	m.mu.Lock()
	if len(m.sets) >= 1<<16 {
		clear(m.sets)
	}
	m.sets[key] = set
	m.mu.Unlock()
	return set
}

// appendEdgeEndpoint adds the identity of one end of an edge: namespace,
// service (the workload) and container name; at pod level also the pod
// and node. An external end is its address.
func appendEdgeEndpoint(attrs []attribute.KeyValue, prefix string, ep *schema.Endpoint, level string) []attribute.KeyValue {
	if ep.GetExternal() || (ep.GetPod() == nil && ep.GetTask() == nil) {
		a, ok := addr(ep.GetAddress())
		if ok {
			return append(attrs, attribute.String(prefix+"external.address", a.String()))
		}
		return append(attrs, attribute.String(prefix+"service.name", "unknown_service"))
	}
	t := ep.GetTask()
	pod := ep.GetPod()
	for _, kv := range endpointAttributes(ep.GetNode(), pod, ep.GetContainer(), t, false) {
		switch kv.Key {
		case semconv.ServiceNameKey, semconv.K8SNamespaceNameKey, semconv.K8SContainerNameKey,
			semconv.K8SDeploymentNameKey, semconv.K8SStatefulSetNameKey, semconv.K8SDaemonSetNameKey,
			semconv.K8SJobNameKey, semconv.K8SCronJobNameKey:
			attrs = append(attrs, attribute.KeyValue{Key: attribute.Key(prefix) + kv.Key, Value: kv.Value})
		case semconv.K8SPodNameKey, semconv.K8SNodeNameKey:
			if level == LevelPod {
				attrs = append(attrs, attribute.KeyValue{Key: attribute.Key(prefix) + kv.Key, Value: kv.Value})
			}
		}
	}
	if broker := ep.GetBrokerKind(); broker != "" {
		attrs = append(attrs, attribute.String(prefix+"weft.broker.kind", broker))
	}
	return attrs
}
