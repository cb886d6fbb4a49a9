package storebench_test

import (
	"context"
	"math"
	"testing"

	"github.com/weftobs/weft/testenv/storebench"
)

// TestRun: every variant stores the same traffic; the uncompressed
// baseline's block files are exactly its stored bytes (the method's own
// check); compression cuts disk and not stored bytes; compact calls cut
// both for CALLS and nothing for EVENTS.
func TestRun(t *testing.T) {
	r, err := storebench.Run(context.Background(), storebench.Options{Events: 100_000, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	base, compact, s2, both := r.Variants[0], r.Variants[1], r.Variants[2], r.Variants[3]
	for _, v := range r.Variants {
		t.Logf("%-30s events %6.1f stored %6.1f disk (%d full blocks) | calls %6.1f stored %6.1f disk (%d full blocks)",
			v.Name, v.Events.StoredPerItem, v.Events.DiskPerItem, v.Events.FullBlocks, v.Calls.StoredPerItem, v.Calls.DiskPerItem, v.Calls.FullBlocks)
		if v.Events.Items != base.Events.Items || v.Calls.Items != base.Calls.Items || v.Events.Messages != base.Events.Messages || v.Calls.Messages != base.Calls.Messages {
			t.Errorf("%s: %d events in %d messages, %d calls in %d messages; the baseline %d, %d, %d, %d", v.Name,
				v.Events.Items, v.Events.Messages, v.Calls.Items, v.Calls.Messages, base.Events.Items, base.Events.Messages, base.Calls.Items, base.Calls.Messages)
		}
	}
	if r.Events < 100_000 || r.Calls*4 < r.Events*9/10 || r.Calls*4 > r.Events {
		t.Errorf("%d calls from %d events: the demo makes about one per four", r.Calls, r.Events)
	}
	for _, v := range []storebench.Variant{base, compact} {
		for _, s := range []storebench.Stream{v.Events, v.Calls} {
			if math.Abs(s.DiskRatio-1) > 1e-9 {
				t.Errorf("%s: uncompressed blocks are %.6f× the stored bytes, want exactly 1", v.Name, s.DiskRatio)
			}
		}
	}
	if s2.Events.StoredBytes != base.Events.StoredBytes || s2.Events.DiskRatio >= 0.9 || s2.Calls.DiskRatio >= 0.9 {
		t.Errorf("s2: events stored %d (baseline %d), disk ratios %.2f %.2f", s2.Events.StoredBytes, base.Events.StoredBytes, s2.Events.DiskRatio, s2.Calls.DiskRatio)
	}
	if compact.Events.StoredBytes != base.Events.StoredBytes || compact.Calls.StoredPerItem >= base.Calls.StoredPerItem {
		t.Errorf("compact calls: events %d (baseline %d), %.1f bytes per call (baseline %.1f)",
			compact.Events.StoredBytes, base.Events.StoredBytes, compact.Calls.StoredPerItem, base.Calls.StoredPerItem)
	}
	if both.Calls.DiskPerItem >= s2.Calls.DiskPerItem || both.Calls.StoredPerItem != compact.Calls.StoredPerItem {
		t.Errorf("s2 + compact: %.1f disk bytes per call (s2 alone %.1f), %.1f stored (compact alone %.1f)",
			both.Calls.DiskPerItem, s2.Calls.DiskPerItem, both.Calls.StoredPerItem, compact.Calls.StoredPerItem)
	}
}
