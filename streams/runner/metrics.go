package runner

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/stage"
)

// Metrics exports the stages' counters and the streams' sizes as OTEL
// metrics, read by Prometheus on /metrics (and by any extra reader, such as
// an OTLP push, given to the MeterProvider).
type Metrics struct {
	reg      *prometheus.Registry
	provider *sdkmetric.MeterProvider
	// unauthorized counts HTTP requests refused for want of the API token.
	unauthorized prometheus.Counter
}

func newMetrics(r *Runner) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(exp)}
	for _, rd := range r.o.MetricReaders {
		opts = append(opts, sdkmetric.WithReader(rd))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	meter := mp.Meter("github.com/weftobs/weft/streams/runner")

	counter := func(name, desc, unit string) metric.Int64ObservableCounter {
		c, _ := meter.Int64ObservableCounter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		return c
	}
	eventsIn := counter("weft.stage.events.in", "Events (or calls) a stage consumed.", "{event}")
	eventsOut := counter("weft.stage.events.out", "Events (or calls) a stage published and the server acknowledged.", "{event}")
	msgsIn := counter("weft.stage.messages.in", "Stream messages a stage consumed.", "{message}")
	acked := counter("weft.stage.acked", "Stream messages acked after their effect was durable.", "{message}")
	redelivered := counter("weft.stage.redelivered", "Stream messages delivered more than once.", "{message}")
	dlq := counter("weft.stage.dlq", "Stream messages sent to the DLQ stream.", "{message}")
	dropped := counter("weft.stage.dropped", "Events dropped because a bound was reached.", "{event}")
	errs := counter("weft.stage.errors", "Processing errors that led to a retry.", "{error}")
	lost := counter("weft.stage.lost", "Events lost before weft saw them (a full kernel ring buffer).", "{event}")
	untracked := counter("weft.stage.untracked", "Connections a collector saw close without having seen them open (their totals were not reported).", "{connection}")
	gaps := counter("weft.stage.gaps", "Events a stage published with part of what they should carry missing, by reason.", "{event}")
	streamMsgs, _ := meter.Int64ObservableGauge("weft.stream.messages", metric.WithDescription("Messages stored in a stream."), metric.WithUnit("{message}"))
	streamBytes, _ := meter.Int64ObservableGauge("weft.stream.bytes", metric.WithDescription("Bytes stored in a stream."), metric.WithUnit("By"))
	pending, _ := meter.Int64ObservableGauge("weft.stage.pending", metric.WithDescription("Messages of an input stream a stage has not been delivered yet (consumer lag)."), metric.WithUnit("{message}"))
	ackPending, _ := meter.Int64ObservableGauge("weft.stage.ack_pending", metric.WithDescription("Messages delivered to a stage and not acked yet."), metric.WithUnit("{message}"))
	degraded, _ := meter.Int64ObservableGauge("weft.stage.degraded", metric.WithDescription("1 for each part of its job a stage cannot do (what: the part; the reason is on /readyz)."), metric.WithUnit("{part}"))
	ours := map[string]bool{}
	for _, n := range r.nodes {
		ours[n.def.Name] = true
	}

	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, n := range r.nodes {
			s := n.counters.Snapshot()
			attrs := metric.WithAttributes(attribute.String("stage", n.def.Name), attribute.String("kind", n.def.Kind))
			o.ObserveInt64(eventsIn, int64(s.EventsIn), attrs)
			o.ObserveInt64(eventsOut, int64(s.EventsOut), attrs)
			o.ObserveInt64(msgsIn, int64(s.MessagesIn), attrs)
			o.ObserveInt64(acked, int64(s.Acked), attrs)
			o.ObserveInt64(redelivered, int64(s.Redelivered), attrs)
			o.ObserveInt64(dlq, int64(s.DLQ), attrs)
			o.ObserveInt64(dropped, int64(s.Dropped), attrs)
			o.ObserveInt64(errs, int64(s.Errors), attrs)
			o.ObserveInt64(lost, int64(s.Lost), attrs)
			o.ObserveInt64(untracked, int64(s.Untracked), attrs)
			if d, ok := n.stage.(stage.Degrader); ok && r.started.Load() {
				for _, line := range d.Degraded() {
					what, _, _ := strings.Cut(line, ":")
					o.ObserveInt64(degraded, 1, metric.WithAttributes(attribute.String("stage", n.def.Name),
						attribute.String("kind", n.def.Kind), attribute.String("what", what)))
				}
			}
			if g, ok := n.stage.(stage.GapReporter); ok {
				for reason, v := range g.Gaps() {
					o.ObserveInt64(gaps, int64(v), metric.WithAttributes(attribute.String("stage", n.def.Name),
						attribute.String("kind", n.def.Kind), attribute.String("reason", reason)))
				}
			}
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, s := range r.o.Topology.Streams {
			st, err := r.o.JS.Stream(ctx, s.Name)
			if err != nil {
				continue // not reachable now: no sample rather than a wrong one
			}
			info, err := st.Info(ctx)
			if err != nil {
				continue
			}
			attrs := metric.WithAttributes(attribute.String("stream", s.Name))
			o.ObserveInt64(streamMsgs, int64(info.State.Msgs), attrs)
			o.ObserveInt64(streamBytes, int64(info.State.Bytes), attrs)
			// Consumer lag of this process's stages: their durables say
			// whose they are in their description.
			cl := st.ListConsumers(ctx)
			for ci := range cl.Info() {
				name, ok := strings.CutPrefix(ci.Config.Description, consume.DescriptionPrefix)
				if !ok || !ours[name] {
					continue
				}
				attrs := metric.WithAttributes(attribute.String("stage", name), attribute.String("stream", s.Name), attribute.String("consumer", ci.Name))
				o.ObserveInt64(pending, int64(ci.NumPending), attrs)
				o.ObserveInt64(ackPending, int64(ci.NumAckPending), attrs)
			}
		}
		return nil
	}, eventsIn, eventsOut, msgsIn, acked, redelivered, dlq, dropped, errs, lost, untracked, gaps, degraded, streamMsgs, streamBytes, pending, ackPending)
	if err != nil {
		return nil, err
	}
	unauthorized := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weft_http_unauthorized_requests_total",
		Help: "HTTP requests refused because they lacked the API token.",
	})
	reg.MustRegister(unauthorized)
	return &Metrics{reg: reg, provider: mp, unauthorized: unauthorized}, nil
}

// MeterProvider is where stages may create their own instruments.
func (m *Metrics) MeterProvider() *sdkmetric.MeterProvider { return m.provider }

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }
