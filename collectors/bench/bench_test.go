package bench

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/testenv/natstest"
)

var update = flag.Bool("update", false, "rewrite testdata/records.bin from the live kernel")

func TestMain(m *testing.M) {
	ChildMain()
	os.Exit(m.Run())
}

func requirePrivileges(t testing.TB) {
	t.Helper()
	if err := bpf.CheckPrivileges(); err != nil {
		t.Skipf("skipping: needs root for eBPF: %v", err)
	}
}

// TestRecord records real ring-buffer records; with -update it rewrites
// the committed capture the non-root replay uses.
func TestRecord(t *testing.T) {
	requirePrivileges(t)
	recs, err := Record(2048, 64)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2048 {
		t.Fatalf("recorded %d records, want 2048", len(recs))
	}
	back, err := DecodeRecords(EncodeRecords(recs))
	if err != nil || len(back) != len(recs) {
		t.Fatalf("round trip: %d records, %v", len(back), err)
	}
	if *update {
		if err := os.WriteFile(filepath.Join("testdata", "records.bin"), EncodeRecords(recs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecordedDecodes(t *testing.T) {
	recs, err := Recorded()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("no committed records (go test ./collectors/bench -run TestRecord -update as root)")
	}
}

// TestRun runs the whole bench small: every figure is there, and no event
// is lost at this rate.
func TestRun(t *testing.T) {
	requirePrivileges(t)
	if testing.Short() {
		t.Skip("skipping the storm in -short mode")
	}
	res, err := Run(context.Background(), Options{Events: 100_000, Conns: 5_000, Rounds: 2, Workers: 2}, SelfStorm("-test.run=^$"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	t.Logf("%s", b)
	if res.UserspaceEventsPerSec <= 0 || res.StormConnectionsPerSec <= 0 || res.StormOverheadRatio <= 0 || res.RSSBytes == 0 {
		t.Errorf("missing figures: %s", b)
	}
	if res.LostEvents != 0 {
		t.Errorf("lost %d events", res.LostEvents)
	}
	// Two rounds: one of each order.
	if len(res.StormRoundRatios) != 2 || slices.Min(res.StormRoundRatios) <= 0 {
		t.Errorf("round ratios %v, want two", res.StormRoundRatios)
	}
}

// BenchmarkUserspacePath replays recorded records through decode → enrich
// → encode → publish; the baseline (publish of pre-decoded events) is
// reported beside it.
func BenchmarkUserspacePath(b *testing.B) {
	recs, err := Recorded()
	if err != nil || len(recs) == 0 {
		b.Skip("no committed records")
	}
	s := natstest.Start(b)
	s.CreateStream(b, "EVENTS", "weft.events.>")
	newPub := func() (*publish.Publisher, error) {
		return publish.New(s.NC, publish.Config{Stage: "bench", Node: "bench"}, nil, nil)
	}
	n := max(b.N, 100_000)
	b.ResetTimer()
	full, base, err := Userspace(context.Background(), recs, n, newPub)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(full, "events/s")
	b.ReportMetric(base, "baseline-events/s")
	b.ReportMetric(full/base, "ratio-to-baseline")
}

// TestMedianCI95: the interval's ends are the order statistics the
// binomial (normal approximation) gives: ranks 14 and 28 of 41, as the
// exact binomial does; 86 and 116 of 201, one rank wider than the exact
// 87 and 115 (conservative); the whole range for a few values.
func TestMedianCI95(t *testing.T) {
	seq := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(n - i) // descending: medianCI95 sorts
		}
		return v
	}
	for _, tt := range []struct {
		n    int
		want [2]float64
	}{
		{0, [2]float64{0, 0}},
		{1, [2]float64{1, 1}},
		{5, [2]float64{1, 5}},
		{41, [2]float64{14, 28}},
		{201, [2]float64{86, 116}},
	} {
		if got := medianCI95(seq(tt.n)); got != tt.want {
			t.Errorf("n=%d: %v, want %v", tt.n, got, tt.want)
		}
	}
}
