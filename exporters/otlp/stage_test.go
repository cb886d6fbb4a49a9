package otlp_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc-go and net/http keep pooled connections' goroutines briefly
		// after Close; the nats client's flusher too.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

var allInputs = []stage.Stream{
	{Name: schema.StreamCalls, Subjects: []string{"weft.calls.>"}},
	{Name: schema.StreamEvents, Subjects: []string{"weft.events.>"}},
}

// newNATS is a NATS server with the CALLS and EVENTS streams.
func newNATS(t testing.TB) *natstest.Server {
	s := natstest.Start(t)
	s.CreateStream(t, schema.StreamCalls, "weft.calls.>")
	s.CreateStream(t, schema.StreamEvents, "weft.events.>")
	s.CreateStream(t, schema.StreamDLQ, "weft.dlq.>")
	return s
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// startStage runs an otlp stage named name with cfg; it is shut down in
// t.Cleanup.
func startStage(t testing.TB, s *natstest.Server, name string, cfg otlp.Config, inputs []stage.Stream, replay *stage.Replay) (*otlp.Stage, *stage.Counters) {
	t.Helper()
	counters := &stage.Counters{}
	st, err := otlp.New(stage.Settings{
		Name: name, Kind: otlp.KindName, Inputs: inputs, Config: &cfg, Node: "node-x",
		Logger: testLogger(t), Counters: counters, Replay: replay,
	})
	if err != nil {
		t.Fatalf("new stage: %v", err)
	}
	if err := st.Start(context.Background(), newHost(s)); err != nil {
		t.Fatalf("start stage: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = st.Shutdown(ctx)
	})
	return st.(*otlp.Stage), counters
}

// baseConfig is a stage config for recv over protocol, with fast batching
// and metric pushes so tests do not wait.
func baseConfig(recv *otlprecv.Receiver, protocol string) otlp.Config {
	cfg := otlp.DefaultConfig()
	cfg.Protocol = protocol
	cfg.Endpoint = recv.GRPCEndpoint()
	if protocol == otlp.ProtocolHTTPProtobuf {
		cfg.Endpoint = recv.HTTPEndpoint()
	}
	cfg.Batch.Linger = 20 * time.Millisecond
	cfg.Metrics.Interval = 100 * time.Millisecond
	cfg.Retry.Initial = 20 * time.Millisecond
	cfg.Retry.Max = 200 * time.Millisecond
	return cfg
}

// waitAllAcked waits until the stage's durable on stream has nothing
// pending or unacked.
func waitAllAcked(t *testing.T, s *natstest.Server, durable, stream string) {
	t.Helper()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		c, err := s.JS.Consumer(context.Background(), stream, durable)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%s on %s: %d pending, %d unacked", durable, stream, info.NumPending, info.NumAckPending)
		}
		return nil
	})
}

func TestStageExportsGroundTruth(t *testing.T) {
	for _, protocol := range []string{otlp.ProtocolGRPC, otlp.ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			s := newNATS(t)
			recv := otlprecv.Start(t)
			calls := workload(9)
			publishCalls(t, s.NC, calls, 4)
			publishEvents(t, s.NC, processEvents())

			_, counters := startStage(t, s, "otlp", baseConfig(recv, protocol), allInputs, nil)

			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got != want {
					return fmt.Errorf("%d spans, want %d", got, want)
				}
				if got := recv.LogCount(); got != 2 {
					return fmt.Errorf("%d log records, want 2", got)
				}
				return nil
			})
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
			waitAllAcked(t, s, "otlp-EVENTS", schema.StreamEvents)

			checkSpans(t, calls, recv.Spans())
			checkLogs(t, recv.LogRecords())
			natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				return checkMetrics(calls, recv.MetricPoints())
			})
			if c := counters.Snapshot(); c.DLQ != 0 || c.Errors != 0 {
				t.Errorf("counters %+v: want no DLQ and no export errors", c)
			}
		})
	}
}

// checkSpans compares spans with the ground truth: one CLIENT and one
// SERVER span per successful call, one CLIENT span per failed connect,
// ids derived from the call, every semantic-convention attribute.
func checkSpans(t *testing.T, calls []*schema.Call, spans []otlprecv.Span) {
	t.Helper()
	byID := map[string]otlprecv.Span{}
	for _, sp := range spans {
		if _, dup := byID[sp.SpanID]; dup {
			t.Errorf("span %s received twice", sp.SpanID)
		}
		byID[sp.SpanID] = sp
	}
	for _, c := range calls {
		ids := otlp.IDsFor(c)
		client, ok := byID[ids.Client.String()]
		if !ok {
			t.Errorf("call %s: no client span", c.Id)
			continue
		}
		server, hasServer := byID[ids.Server.String()]
		if client.TraceID != hex.EncodeToString(ids.Trace[:]) || client.Kind != tracepb.Span_SPAN_KIND_CLIENT || client.ParentSpanID != "" {
			t.Errorf("call %s: client span trace %s kind %v parent %q", c.Id, client.TraceID, client.Kind, client.ParentSpanID)
		}
		if !client.Start.Equal(time.Unix(0, int64(c.StartUnixNano))) || !client.End.Equal(time.Unix(0, int64(c.EndUnixNano))) {
			t.Errorf("call %s: client span %v..%v", c.Id, client.Start, client.End)
		}
		if client.Scope != otlp.ScopeName {
			t.Errorf("call %s: scope %q", c.Id, client.Scope)
		}
		checkResource(t, c.Id+" client", client.Resource, map[string]any{
			"k8s.node.name": "node-a", "k8s.namespace.name": "shop", "k8s.pod.name": "shop-7d9f-abcde", "k8s.pod.uid": "uid-shop",
			"k8s.container.name": "app", "container.id": "cid-app", "k8s.deployment.name": "shop", "k8s.replicaset.name": "shop-7d9f",
			"process.pid": int64(100), "process.executable.name": "shop", "process.executable.path": "/usr/bin/shop", "service.name": "shop",
		})
		switch {
		case c.Errno != 0:
			if hasServer {
				t.Errorf("call %s: failed connect has a server span", c.Id)
			}
			if client.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || client.Status.GetMessage() != "connection refused" {
				t.Errorf("call %s: status %v", c.Id, client.Status)
			}
			checkAttrs(t, c.Id+" client", client.Attrs, map[string]any{"error.type": "ECONNREFUSED", "network.transport": "tcp"})
		case c.Transport == schema.Transport_TRANSPORT_TCP:
			if !hasServer {
				t.Errorf("call %s: no server span", c.Id)
				continue
			}
			checkAttrs(t, c.Id+" client", client.Attrs, map[string]any{
				"network.transport": "tcp", "network.type": "ipv4",
				"network.peer.address": "10.0.2.7", "network.peer.port": int64(5672),
				"network.local.address": "10.0.1.5", "network.local.port": int64(c.Client.Port),
				"server.address": "10.96.0.10", "server.port": int64(5672),
			})
			checkAttrs(t, c.Id+" server", server.Attrs, map[string]any{
				"network.transport": "tcp", "network.type": "ipv4",
				"network.peer.address": "10.0.1.5", "network.peer.port": int64(c.Client.Port),
				"network.local.address": "10.0.2.7", "network.local.port": int64(5672),
				"client.address": "10.0.1.5", "client.port": int64(c.Client.Port),
				"server.address": "10.96.0.10", "server.port": int64(5672),
			})
			checkResource(t, c.Id+" server", server.Resource, map[string]any{
				"k8s.node.name": "node-b", "k8s.namespace.name": "infra", "k8s.pod.name": "rabbitmq-0", "k8s.pod.uid": "uid-rabbit",
				"k8s.container.name": "rabbitmq", "container.id": "cid-rabbit", "k8s.statefulset.name": "rabbitmq",
				"process.pid": int64(200), "process.executable.name": "beam.smp", "service.name": "rabbitmq",
			})
			if client.Name != "tcp rabbitmq:5672" || server.Name != client.Name {
				t.Errorf("call %s: names %q / %q", c.Id, client.Name, server.Name)
			}
		case c.Transport == schema.Transport_TRANSPORT_UNIX:
			if !hasServer {
				t.Errorf("call %s: no server span", c.Id)
				continue
			}
			checkAttrs(t, c.Id+" client", client.Attrs, map[string]any{
				"network.transport": "unix", "network.peer.address": "/var/run/envoy.sock", "server.address": "/var/run/envoy.sock",
			})
			checkAttrs(t, c.Id+" server", server.Attrs, map[string]any{
				"network.transport": "unix", "network.local.address": "/var/run/envoy.sock", "server.address": "/var/run/envoy.sock",
			})
			checkResource(t, c.Id+" server", server.Resource, map[string]any{
				"k8s.pod.name": "shop-7d9f-abcde", "k8s.container.name": "envoy", "container.id": "cid-envoy",
				"process.pid": int64(300), "process.executable.name": "envoy", "service.name": "shop",
			})
		}
		if hasServer {
			if server.Kind != tracepb.Span_SPAN_KIND_SERVER || server.ParentSpanID != client.SpanID || server.TraceID != client.TraceID {
				t.Errorf("call %s: server span kind %v parent %s trace %s, want child of %s in %s", c.Id, server.Kind, server.ParentSpanID, server.TraceID, client.SpanID, client.TraceID)
			}
			if server.Status.GetCode() != tracepb.Status_STATUS_CODE_UNSET {
				t.Errorf("call %s: server status %v", c.Id, server.Status)
			}
		}
	}
	if want := wantSpans(calls); len(spans) != want {
		t.Errorf("%d spans, want %d", len(spans), want)
	}
}

func checkAttrs(t *testing.T, what string, got otlprecv.Attrs, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("%s: attribute %s = %v (%T), want %v", what, k, got[k], got[k], v)
		}
	}
}

func checkResource(t *testing.T, what string, got otlprecv.Attrs, want map[string]any) {
	t.Helper()
	checkAttrs(t, what+" resource", got, want)
}

func checkLogs(t *testing.T, logs []otlprecv.LogRecord) {
	t.Helper()
	if len(logs) != 2 {
		t.Fatalf("%d log records, want 2", len(logs))
	}
	byEvent := map[string]otlprecv.LogRecord{}
	for _, l := range logs {
		byEvent[l.EventName] = l
	}
	res := map[string]any{
		"k8s.node.name": "node-a", "k8s.namespace.name": "shop", "k8s.pod.name": "shop-7d9f-abcde", "k8s.pod.uid": "uid-shop",
		"k8s.container.name": "app", "container.id": "cid-app", "k8s.deployment.name": "shop", "service.name": "shop",
	}
	exec, ok := byEvent[otlp.EventProcessExec]
	if !ok {
		t.Fatalf("no %s record in %+v", otlp.EventProcessExec, logs)
	}
	checkResource(t, "exec", exec.Resource, res)
	checkAttrs(t, "exec", exec.Attrs, map[string]any{
		"process.pid": int64(100), "process.parent_pid": int64(1), "process.executable.name": "shop",
		"process.executable.path": "/usr/bin/shop", "process.command": "shop",
		"process.command_args": []any{"/usr/bin/shop", "--port", "8080"},
	})
	if !exec.Time.Equal(base.Add(time.Second)) || exec.Severity != logspb.SeverityNumber_SEVERITY_NUMBER_INFO {
		t.Errorf("exec record at %v severity %v", exec.Time, exec.Severity)
	}
	if _, ok := exec.Resource["process.pid"]; ok {
		t.Errorf("exec resource carries process.pid: the resource is the pod's")
	}
	exit, ok := byEvent[otlp.EventProcessExit]
	if !ok {
		t.Fatalf("no %s record", otlp.EventProcessExit)
	}
	checkResource(t, "exit", exit.Resource, res)
	checkAttrs(t, "exit", exit.Attrs, map[string]any{
		"process.pid": int64(100), "process.exit.code": int64(1), "process.executable.name": "shop",
		"process.creation.time": base.Add(time.Second).Format(time.RFC3339Nano),
	})
}

// checkMetrics compares the latest cumulative edge metrics with the
// ground truth.
func checkMetrics(calls []*schema.Call, points []otlprecv.MetricPoint) error {
	type key struct{ name, server, transport, dir, errType string }
	latest := map[key]otlprecv.MetricPoint{}
	for _, p := range points {
		k := key{p.Name, fmt.Sprint(p.Attrs["weft.server.k8s.container.name"]), fmt.Sprint(p.Attrs["network.transport"]), fmt.Sprint(p.Attrs["network.io.direction"]), fmt.Sprint(p.Attrs["error.type"])}
		if old, ok := latest[k]; !ok || !p.Time.Before(old.Time) {
			latest[k] = p
		}
	}
	var tcp, unix, failed int64
	for _, c := range calls {
		switch {
		case c.Errno != 0:
			failed++
		case c.Transport == schema.Transport_TRANSPORT_TCP:
			tcp++
		default:
			unix++
		}
	}
	want := []struct {
		k     key
		value int64
		attrs map[string]any
	}{
		{key{otlp.MetricEdgeCalls, "rabbitmq", "tcp", "<nil>", "<nil>"}, tcp, map[string]any{
			"weft.client.service.name": "shop", "weft.client.k8s.namespace.name": "shop", "weft.client.k8s.deployment.name": "shop",
			"weft.server.service.name": "rabbitmq", "weft.server.k8s.namespace.name": "infra", "weft.server.k8s.statefulset.name": "rabbitmq",
			"weft.server.weft.broker.kind": "rabbitmq", "server.port": int64(5672),
		}},
		{key{otlp.MetricEdgeBytes, "rabbitmq", "tcp", "transmit", "<nil>"}, 1200 * tcp, nil},
		{key{otlp.MetricEdgeBytes, "rabbitmq", "tcp", "receive", "<nil>"}, 3400 * tcp, nil},
		{key{otlp.MetricEdgeDuration, "rabbitmq", "tcp", "<nil>", "<nil>"}, tcp, nil},
		{key{otlp.MetricEdgeCalls, "envoy", "unix", "<nil>", "<nil>"}, unix, map[string]any{
			"weft.client.k8s.container.name": "app", "server.address": "/var/run/envoy.sock",
		}},
		{key{otlp.MetricEdgeErrors, "rabbitmq", "tcp", "<nil>", "ECONNREFUSED"}, failed, map[string]any{"error.type": "ECONNREFUSED"}},
	}
	for _, w := range want {
		p, ok := latest[w.k]
		if !ok {
			return fmt.Errorf("no metric %+v yet", w.k)
		}
		if fmt.Sprint(p.Value) != fmt.Sprint(w.value) {
			return fmt.Errorf("metric %+v = %v, want %d", w.k, p.Value, w.value)
		}
		for k, v := range w.attrs {
			if fmt.Sprint(p.Attrs[k]) != fmt.Sprint(v) {
				return fmt.Errorf("metric %+v: %s = %v, want %v", w.k, k, p.Attrs[k], v)
			}
		}
	}
	for _, name := range []string{otlp.MetricPipelineEventsIn, otlp.MetricPipelineAcked, otlp.MetricPipelineLag} {
		found := false
		for _, p := range points {
			found = found || p.Name == name
		}
		if !found {
			return fmt.Errorf("no pipeline metric %s", name)
		}
	}
	return nil
}
