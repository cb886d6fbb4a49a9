package provision_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestOperatorEdits edits a provisioned stream as an operator would (the
// nats CLI's `stream edit` is an UpdateStream), provisions again, and
// checks the difference is reported field by field, then either reverted
// (the default) or kept (onDrift: keep).
func TestOperatorEdits(t *testing.T) {
	edits := []struct {
		name  string
		edit  func(*jetstream.StreamConfig)
		drift []provision.Drift
	}{
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour },
			[]provision.Drift{{Stream: "EVENTS", Field: "maxAge", Live: "1h0m0s", Topology: "24h0m0s"}}},
		{"max bytes and msgs", func(c *jetstream.StreamConfig) { c.MaxBytes, c.MaxMsgs = 512<<20, 1000 },
			[]provision.Drift{
				{Stream: "EVENTS", Field: "maxBytes", Live: "536870912", Topology: "1073741824"},
				{Stream: "EVENTS", Field: "maxMsgs", Live: "1000", Topology: "unlimited"},
			}},
		{"subjects, compression, duplicates", func(c *jetstream.StreamConfig) {
			c.Subjects = append(c.Subjects, "debug.>")
			c.Compression = jetstream.NoCompression
			c.Duplicates = time.Minute
		}, []provision.Drift{
			{Stream: "EVENTS", Field: "subjects", Live: "[weft.events.>, debug.>]", Topology: "[weft.events.>]"},
			{Stream: "EVENTS", Field: "duplicates", Live: "1m0s", Topology: "2m0s"},
			{Stream: "EVENTS", Field: "compression", Live: "none", Topology: "s2"},
		}},
		{"discard", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew },
			[]provision.Drift{{Stream: "EVENTS", Field: "discard", Live: "DiscardNew", Topology: "DiscardOld"}}},
	}
	for _, onDrift := range []string{"", topology.OnDriftApply, topology.OnDriftKeep} {
		for _, e := range edits {
			t.Run(onDrift+"/"+e.name, func(t *testing.T) {
				s := natstest.Start(t)
				ctx := context.Background()
				topo := &topology.Topology{Streams: []*topology.Stream{{
					Name: "EVENTS", Subjects: []string{"weft.events.>"},
					MaxAge: topology.Duration(24 * time.Hour), MaxBytes: 1 << 30, OnDrift: onDrift,
				}}}
				res, err := provision.EnsureStreams(ctx, s.JS, topo, provision.Options{})
				if err != nil || res[0].Action != provision.Created || len(res[0].Drift) != 0 {
					t.Fatalf("first start: %+v, %v", res, err)
				}
				want := liveConfig(t, s.JS)

				// The operator's edit.
				edited := want
				e.edit(&edited)
				if _, err := s.JS.UpdateStream(ctx, edited); err != nil {
					t.Fatalf("operator edit: %v", err)
				}
				edited = liveConfig(t, s.JS)

				// Start again.
				res, err = provision.EnsureStreams(ctx, s.JS, topo, provision.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res[0].Drift, e.drift) {
					t.Errorf("drift:\n got %v\nwant %v", res[0].Drift, e.drift)
				}
				got := liveConfig(t, s.JS)
				wantAction, wantLive := provision.Updated, want
				if onDrift == topology.OnDriftKeep {
					wantAction, wantLive = provision.Kept, edited
				}
				if res[0].Action != wantAction {
					t.Errorf("action %q, want %q", res[0].Action, wantAction)
				}
				if d := provision.Diff(got, wantLive); len(d) != 0 {
					t.Errorf("live stream after the second start differs from what it should be: %v", d)
				}

				// A third start finds nothing more to report when the
				// topology was applied; a kept edit is reported again.
				res, err = provision.EnsureStreams(ctx, s.JS, topo, provision.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if onDrift == topology.OnDriftKeep {
					if res[0].Action != provision.Kept || !slices.Equal(res[0].Drift, e.drift) {
						t.Errorf("third start: %+v", res[0])
					}
				} else if res[0].Action != provision.Unchanged || len(res[0].Drift) != 0 {
					t.Errorf("third start: %+v", res[0])
				}
			})
		}
	}
}

func liveConfig(t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(context.Background(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config
}

func TestDriftString(t *testing.T) {
	d := provision.Drift{Stream: "EVENTS", Field: "maxAge", Live: "1h0m0s", Topology: "24h0m0s"}
	if got, want := d.String(), "stream EVENTS: maxAge live 1h0m0s, topology 24h0m0s"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
