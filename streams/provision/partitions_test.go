package provision_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestPartitionCountFixed: the partition count is recorded on the stream;
// the same count is unchanged, another is refused naming the stream and
// both counts, and the stream keeps its definition.
func TestPartitionCountFixed(t *testing.T) {
	ctx := context.Background()
	topo := func(n int) *topology.Topology {
		return &topology.Topology{Streams: []*topology.Stream{{Name: "EVENTS", Subjects: []string{"weft.events.>"}, Partitions: n}}}
	}
	cases := []struct {
		name       string
		first, now int
		refused    string // substring of the error; "" for none
	}{
		{name: "same count", first: 6, now: 6},
		{name: "more partitions", first: 6, now: 8, refused: "stream EVENTS: has 6 partitions, the topology declares 8"},
		{name: "fewer partitions", first: 6, now: 2, refused: "stream EVENTS: has 6 partitions, the topology declares 2"},
		{name: "partitions added to an unpartitioned stream", first: 0, now: 4, refused: "stream EVENTS: has 1 partitions, the topology declares 4"},
		{name: "partitions dropped", first: 4, now: 0, refused: "stream EVENTS: has 4 partitions, the topology declares 1"},
		{name: "none, then none", first: 0, now: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := natstest.Start(t)
			if _, err := provision.EnsureStreams(ctx, s.JS, topo(c.first), provision.Options{}); err != nil {
				t.Fatal(err)
			}
			res, err := provision.EnsureStreams(ctx, s.JS, topo(c.now), provision.Options{})
			if c.refused == "" {
				if err != nil || len(res) != 1 || res[0].Action != provision.Unchanged {
					t.Fatalf("second ensure: %+v, %v; want unchanged", res, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "docs/scaling.md") {
				t.Fatalf("got %v, want a refusal with %q", err, c.refused)
			}
			st, err := s.JS.Stream(ctx, "EVENTS")
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			if c.first > 1 {
				want = strconv.Itoa(c.first)
			}
			if got := st.CachedInfo().Config.Metadata[schema.MetaPartitions]; got != want {
				t.Fatalf("stream metadata %s=%q after the refusal, want %q", schema.MetaPartitions, got, want)
			}
		})
	}
}
