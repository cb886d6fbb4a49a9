package otlp_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// logBuffer is a goroutine-safe sink for a stage's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// newStage builds and starts an otlp stage logging to logs; the caller
// shuts it down (stop), which flushes its metrics.
func newStage(t *testing.T, s *natstest.Server, name string, cfg otlp.Config, inputs []stage.Stream, replay *stage.Replay, logs *logBuffer) (stop func()) {
	t.Helper()
	st, err := otlp.New(stage.Settings{
		Name: name, Kind: otlp.KindName, Inputs: inputs, Config: &cfg, Node: "node-x",
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Counters: &stage.Counters{}, Replay: replay,
	})
	if err != nil {
		t.Fatalf("new stage: %v", err)
	}
	if err := st.Start(context.Background(), newHost(s)); err != nil {
		t.Fatalf("start stage: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := st.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestBackendLacksSignal: a backend with no service for a signal (Jaeger
// has none for metrics; gRPC Unimplemented, HTTP 404) gets the other
// signals as usual, and the stage says so once, not at every push.
func TestBackendLacksSignal(t *testing.T) {
	for _, protocol := range []string{otlp.ProtocolGRPC, otlp.ProtocolHTTPProtobuf} {
		for _, lacking := range []string{otlprecv.SignalMetrics, otlprecv.SignalLogs} {
			t.Run(protocol+"/"+lacking, func(t *testing.T) {
				s := newNATS(t)
				recv := otlprecv.Start(t, otlprecv.WithoutSignal(lacking))
				calls := workload(9)
				publishCalls(t, s.NC, calls, 4)
				publishEvents(t, s.NC, processEvents())
				logs := &logBuffer{}
				stop := newStage(t, s, "otlp", baseConfig(recv, protocol), allInputs, nil, logs)

				waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
				waitAllAcked(t, s, "otlp-EVENTS", schema.StreamEvents)
				// Metrics are offered at every push (100 ms here): wait
				// for several refusals.
				natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
					if n := recv.Unsupported(); lacking == otlprecv.SignalMetrics && n < 5 || n < 1 {
						return fmt.Errorf("%d unsupported exports so far", n)
					}
					return nil
				})
				stop()

				if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got != want {
					t.Errorf("%d spans, want %d", got, want)
				}
				warning := "has no service for " + lacking
				if n := logs.count(warning); n != 1 {
					t.Errorf("%q said %d times, want once; log:\n%s", warning, n, logs.buf.String())
				}
				if n := logs.count("export failed"); n != 0 {
					t.Errorf("%d export failures logged; log:\n%s", n, logs.buf.String())
				}
				switch lacking {
				case otlprecv.SignalMetrics:
					if got := recv.LogCount(); got != 2 {
						t.Errorf("%d log records, want 2", got)
					}
				case otlprecv.SignalLogs:
					if err := checkMetrics(calls, recv.MetricPoints()); err != nil {
						t.Error(err)
					}
					if n := recv.Unsupported(); n != 1 {
						t.Errorf("logs offered %d times after the backend said it has no logs service, want once", n)
					}
				}
			})
		}
	}
}

// TestSignalExporterEnv: OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none turns
// that signal off and leaves the others; a value weft cannot honour is
// an error naming the variable.
func TestSignalExporterEnv(t *testing.T) {
	for _, tc := range []struct {
		env, value                string
		spans, logs, metrics, err bool
	}{
		{env: "OTEL_TRACES_EXPORTER", value: "none", logs: true, metrics: true},
		{env: "OTEL_METRICS_EXPORTER", value: "none", spans: true, logs: true},
		{env: "OTEL_LOGS_EXPORTER", value: "none", spans: true, metrics: true},
		{env: "OTEL_LOGS_EXPORTER", value: "otlp", spans: true, logs: true, metrics: true},
		{env: "OTEL_METRICS_EXPORTER", value: "prometheus", err: true},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			s := newNATS(t)
			recv := otlprecv.Start(t)
			cfg := baseConfig(recv, otlp.ProtocolGRPC)
			if tc.err {
				_, err := otlp.New(stage.Settings{Name: "otlp", Kind: otlp.KindName, Inputs: allInputs, Config: &cfg})
				if err == nil || !strings.Contains(err.Error(), tc.env) {
					t.Fatalf("error %v, want one naming %s", err, tc.env)
				}
				return
			}
			calls := workload(6)
			publishCalls(t, s.NC, calls, 4)
			publishEvents(t, s.NC, processEvents())
			stop := newStage(t, s, "otlp", cfg, allInputs, nil, &logBuffer{})
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
			waitAllAcked(t, s, "otlp-EVENTS", schema.StreamEvents)
			stop() // flushes the metrics

			check := func(what string, on bool, got, want uint64) {
				if !on {
					want = 0
				}
				if got != want {
					t.Errorf("%s: got %d, want %d", what, got, want)
				}
			}
			check("spans", tc.spans, recv.SpanCount(), uint64(wantSpans(calls)))
			check("log records", tc.logs, recv.LogCount(), 2)
			if tc.metrics {
				if err := checkMetrics(calls, recv.MetricPoints()); err != nil {
					t.Error(err)
				}
			} else if n := recv.MetricPointCount(); n != 0 {
				t.Errorf("%d metric points with metrics off", n)
			}
		})
	}
}

// latestEdgeCalls sums, over exporter instances, the latest value of
// weft.edge.calls per edge (keyed by server container), and returns the
// instances seen.
func latestEdgeCalls(points []otlprecv.MetricPoint) (map[string]int64, map[string]bool) {
	type key struct{ instance, server, errType string }
	latest := map[key]otlprecv.MetricPoint{}
	instances := map[string]bool{}
	for _, p := range points {
		id := fmt.Sprint(p.Resource["service.instance.id"])
		instances[id] = true
		if p.Name != otlp.MetricEdgeCalls {
			continue
		}
		k := key{id, fmt.Sprint(p.Attrs["weft.server.k8s.container.name"]), fmt.Sprint(p.Attrs["error.type"])}
		if old, ok := latest[k]; !ok || !p.Time.Before(old.Time) {
			latest[k] = p
		}
	}
	sum := map[string]int64{}
	for k, p := range latest {
		sum[k.server+"/"+k.errType] += p.Value.(int64)
	}
	return sum, instances
}

func wantEdgeCalls(calls []*schema.Call) map[string]int64 {
	want := map[string]int64{}
	for _, c := range calls {
		switch {
		case c.Errno != 0:
			want["rabbitmq/ECONNREFUSED"]++
		case c.Transport == schema.Transport_TRANSPORT_TCP:
			want["rabbitmq/<nil>"]++
		default:
			want["envoy/<nil>"]++
		}
	}
	return want
}

// TestMetricsCountEachCallOnce: two replicas of one stage on one node
// share the stream; each exports under its own service.instance.id, and
// their series summed give each call once. A replay of the same range to
// the same backend then adds nothing to the edge metrics, while its spans
// keep their ids.
func TestMetricsCountEachCallOnce(t *testing.T) {
	s := newNATS(t)
	recv := otlprecv.Start(t)
	calls := workload(60)
	publishCalls(t, s.NC, calls, 2)
	cfg := baseConfig(recv, otlp.ProtocolGRPC)
	cfg.Batch.MaxItems = 8 // many batches, shared by both replicas
	stopA := newStage(t, s, "otlp", cfg, allInputs[:1], nil, &logBuffer{})
	stopB := newStage(t, s, "otlp", cfg, allInputs[:1], nil, &logBuffer{})
	waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
	stopA()
	stopB()

	got, instances := latestEdgeCalls(recv.MetricPoints())
	if len(instances) != 2 || instances["<nil>"] || instances[""] {
		t.Fatalf("exporter instances %v, want two distinct service.instance.id", instances)
	}
	want := wantEdgeCalls(calls)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("edge calls summed over instances %v, want %v", got, want)
	}

	stopR := newStage(t, s, "otlp", cfg, allInputs[:1], &stage.Replay{Durable: "replay-otlp", StartTime: time.Now().Add(-time.Hour)}, &logBuffer{})
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got, want := recv.SpanCount(), uint64(2*wantSpans(calls)); got != want {
			return fmt.Errorf("%d spans, want %d (each call twice: live and replayed)", got, want)
		}
		return nil
	})
	stopR()
	if got, _ := latestEdgeCalls(recv.MetricPoints()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a replay, edge calls summed over instances %v, want still %v", got, want)
	}
}
