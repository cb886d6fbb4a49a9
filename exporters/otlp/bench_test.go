package otlp_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// cpuTime is the process's CPU time so far (user + system). The receiver
// runs in the same process, so spans per CPU-second charge weft for the
// receiver's work too: a conservative figure.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report sets spans/s (wall clock) and spans/cpu-s (per core busy).
func report(b *testing.B, spans uint64, wall, cpu time.Duration) {
	b.ReportMetric(float64(spans)/wall.Seconds(), "spans/s")
	b.ReportMetric(float64(spans)/cpu.Seconds(), "spans/cpu-s")
	b.ReportMetric(0, "ns/op")
}

// benchCalls are n distinct calls over a few hundred endpoints.
func benchCalls(n int) []*schema.Call {
	calls := make([]*schema.Call, n)
	for i := range n {
		if i%2 == 0 {
			calls[i] = tcpCall(i)
		} else {
			calls[i] = unixCall(i)
		}
		calls[i].Id = fmt.Sprintf("bench/%d", i)
	}
	return calls
}

// BenchmarkExport compares the stage's export path (calls mapped to spans
// with deterministic ids, exported synchronously in batches of 2048 by two
// exporters) with the SDK's own path for the same spans (a tracer, the
// BatchSpanProcessor and the same OTLP exporter), both to an OTLP/gRPC
// receiver in this process.
//
// The receiver either decodes every request, as a backend would (its CPU
// is charged to the figure), or only counts the spans on the wire
// ("count-only"), which isolates the exporter's own cost.
func BenchmarkExport(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []otlprecv.Option
	}{
		{"count-only", []otlprecv.Option{otlprecv.WithCountOnly()}},
		{"full-decode", nil},
	} {
		b.Run(mode.name, func(b *testing.B) { benchmarkExport(b, mode.opts) })
	}
}

func benchmarkExport(b *testing.B, recvOpts []otlprecv.Option) {
	const batchCalls = 1024 // 2048 spans
	calls := benchCalls(batchCalls * 8)

	b.Run("weft", func(b *testing.B) {
		recv := otlprecv.Start(b, recvOpts...)
		cfg := otlp.DefaultConfig()
		cfg.Endpoint = recv.GRPCEndpoint()
		exp, err := otlp.NewTraceExporter(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer exp.Shutdown(context.Background())
		m := otlp.NewSpanMapper()
		work := make(chan []*schema.Call)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				spans := make([]sdktrace.ReadOnlySpan, 0, 2*batchCalls)
				for cs := range work {
					spans = spans[:0]
					for _, c := range cs {
						spans = m.AppendSpans(spans, c)
					}
					if err := exp.ExportSpans(context.Background(), spans); err != nil {
						b.Error(err)
					}
				}
			})
		}
		cpu0, t0 := cpuTime(), time.Now()
		b.ResetTimer()
		for i := range b.N {
			off := (i % 8) * batchCalls
			work <- calls[off : off+batchCalls]
		}
		close(work)
		wg.Wait()
		b.StopTimer()
		report(b, recv.SpanCount(), time.Since(t0), cpuTime()-cpu0)
	})

	b.Run("baseline-sdk-batchspanprocessor", func(b *testing.B) {
		recv := otlprecv.Start(b, recvOpts...)
		cfg := otlp.DefaultConfig()
		cfg.Endpoint = recv.GRPCEndpoint()
		exp, err := otlp.NewTraceExporter(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(2048), sdktrace.WithMaxQueueSize(8192), sdktrace.WithBlocking(), sdktrace.WithBatchTimeout(200*time.Millisecond)),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "shop"), attribute.String("k8s.pod.name", "shop-7d9f-abcde"))),
		)
		tr := tp.Tracer("bench")
		ctx := context.Background()
		cpu0, t0 := cpuTime(), time.Now()
		b.ResetTimer()
		for i := range b.N {
			off := (i % 8) * batchCalls
			for _, c := range calls[off : off+batchCalls] {
				start, end := time.Unix(0, int64(c.StartUnixNano)), time.Unix(0, int64(c.EndUnixNano))
				attrs := []attribute.KeyValue{
					attribute.String("network.transport", "tcp"), attribute.String("network.type", "ipv4"),
					attribute.String("network.peer.address", "10.0.2.7"), attribute.Int("network.peer.port", 5672),
					attribute.String("network.local.address", "10.0.1.5"), attribute.Int("network.local.port", 40000),
					attribute.String("server.address", "10.96.0.10"), attribute.Int("server.port", 5672),
				}
				cctx, cs := tr.Start(ctx, "tcp rabbitmq:5672", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
				_, ss := tr.Start(cctx, "tcp rabbitmq:5672", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
				ss.End(trace.WithTimestamp(end))
				cs.End(trace.WithTimestamp(end))
			}
		}
		if err := tp.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		report(b, recv.SpanCount(), time.Since(t0), cpuTime()-cpu0)
	})
}

// BenchmarkStage runs the whole stage: CallBatches on a JetStream stream,
// consumed, mapped, exported to the receiver and acked. It reports
// throughput, and the latency from a call's publication on CALLS (its
// close, give or take the correlator) to its spans' arrival at the
// backend, under a paced load with default batching.
func BenchmarkStage(b *testing.B) {
	b.Run("throughput", func(b *testing.B) {
		s := newNATS(b)
		recv := otlprecv.Start(b, otlprecv.WithCountOnly())
		calls := benchCalls(256)
		want := 0
		for range b.N {
			publishCalls(b, s.NC, calls, 256)
			want += wantSpans(calls)
		}
		cfg := otlp.DefaultConfig()
		cfg.Endpoint = recv.GRPCEndpoint()
		cfg.Metrics.Enabled = new(false)
		cpu0, t0 := cpuTime(), time.Now()
		b.ResetTimer()
		startStage(b, s, "otlp", cfg, allInputs[:1], nil)
		for recv.SpanCount() < uint64(want) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		report(b, recv.SpanCount(), time.Since(t0), cpuTime()-cpu0)
	})

	b.Run("latency", func(b *testing.B) {
		s := newNATS(b)
		recv := otlprecv.Start(b)
		cfg := otlp.DefaultConfig() // default batching: linger 200ms
		cfg.Endpoint = recv.GRPCEndpoint()
		cfg.Metrics.Enabled = new(false)
		startStage(b, s, "otlp", cfg, allInputs[:1], nil)
		// 5,000 calls/s in publisher batches (default linger 50ms), for
		// b.N × 100ms.
		b.ResetTimer()
		sent := 0
		p := newCallPublisher(b, s)
		deadline := time.Now().Add(time.Duration(b.N) * 100 * time.Millisecond)
		tick := time.NewTicker(10 * time.Millisecond)
		for time.Now().Before(deadline) {
			<-tick.C
			for range 50 {
				c := tcpCall(sent)
				c.Id = fmt.Sprintf("lat/%d", sent)
				now := time.Now()
				c.StartUnixNano, c.EndUnixNano = uint64(now.Add(-time.Millisecond).UnixNano()), uint64(now.UnixNano())
				if err := p.Publish(context.Background(), schema.CallSubject("node-a"), c); err != nil {
					b.Fatal(err)
				}
				sent++
			}
		}
		tick.Stop()
		_ = p.Close(context.Background())
		for recv.SpanCount() < uint64(2*sent) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		var lat []time.Duration
		for _, sp := range recv.Spans() {
			lat = append(lat, sp.Arrived.Sub(sp.End))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
		b.ReportMetric(0, "ns/op")
	})
}

func newCallPublisher(b *testing.B, s *natstest.Server) *publish.Publisher {
	p, err := publish.New(s.NC, publish.Config{Stage: "correlator", Node: "node-a", Type: &schema.CallBatch{}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStageEdgeMetrics is the cost of the edge metrics, counted once
// per call on a server-confirmed ack (DoubleAck, a round trip per
// message): the stage's throughput with metrics on, beside the same run
// with metrics off (plain acks) as the baseline.
func BenchmarkStageEdgeMetrics(b *testing.B) {
	run := func(metrics bool) float64 {
		s := newNATS(b)
		recv := otlprecv.Start(b, otlprecv.WithCountOnly())
		calls := benchCalls(256)
		want := 0
		for range max(b.N, 100) {
			publishCalls(b, s.NC, calls, 64)
			want += wantSpans(calls)
		}
		cfg := otlp.DefaultConfig()
		cfg.Endpoint = recv.GRPCEndpoint()
		cfg.Metrics.Enabled = new(metrics)
		t0 := time.Now()
		st, _ := startStage(b, s, "otlp", cfg, allInputs[:1], nil)
		durable := "otlp-" + schema.StreamCalls
		for {
			c, err := s.JS.Consumer(context.Background(), schema.StreamCalls, durable)
			if err == nil {
				if info, err := c.Info(context.Background()); err == nil && info.NumPending == 0 && info.NumAckPending == 0 && recv.SpanCount() >= uint64(want) {
					break
				}
			}
			time.Sleep(time.Millisecond)
		}
		wall := time.Since(t0)
		_ = st.Shutdown(context.Background())
		return float64(want) / wall.Seconds()
	}
	b.ResetTimer()
	// Two rounds, one in each order, so warm-up favours neither; the
	// better of each is kept.
	var base, with float64
	for _, first := range []bool{false, true} {
		a, z := run(first), run(!first)
		if first {
			a, z = z, a
		}
		base, with = max(base, a), max(with, z)
	}
	b.StopTimer()
	b.ReportMetric(with, "spans/s")
	b.ReportMetric(base, "baseline-spans/s")
	b.ReportMetric(with/base, "ratio-to-baseline")
	b.ReportMetric(0, "ns/op")
}
