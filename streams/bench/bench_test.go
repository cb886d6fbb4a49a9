package bench_test

import (
	"context"
	"testing"

	"github.com/weftobs/weft/streams/bench"
)

// BenchmarkStreams reports batched publish and consume throughput through a
// file-backed embedded JetStream, and the one-event-per-message baseline
// of the same run; speedup is the ratio, the figure that survives a noisy
// machine.
func BenchmarkStreams(b *testing.B) {
	var r bench.Result
	for b.Loop() {
		var err error
		r, err = bench.Run(context.Background(), bench.Options{Events: 300_000, Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.PublishEventsPerSec, "publish-events/s")
	b.ReportMetric(r.ConsumeEventsPerSec, "consume-events/s")
	b.ReportMetric(r.BaselinePublishEventsPerSec, "baseline-publish-events/s")
	b.ReportMetric(r.PublishSpeedupOverBaseline, "speedup")
	b.ReportMetric(r.EventBytes, "event-bytes")
}

// TestRunSmall keeps the benchmark harness honest in the ordinary test run.
func TestRunSmall(t *testing.T) {
	r, err := bench.Run(context.Background(), bench.Options{Events: 20_000, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if r.PublishEventsPerSec <= 0 || r.ConsumeEventsPerSec <= 0 || r.BaselinePublishEventsPerSec <= 0 || r.EventBytes < 100 {
		t.Fatalf("result %+v", r)
	}
}
