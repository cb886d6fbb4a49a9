package memstore_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
)

var (
	app  = graph.Ref{Label: graph.LabelPod, K1: "uid-app"}
	nats = graph.Ref{Label: graph.LabelPod, K1: "uid-nats"}
	node = graph.Ref{Label: graph.LabelNode, K1: "node-a"}
)

func batch(seq uint64, bucket int64, count uint64, ended int64) *graph.Batch {
	return &graph.Batch{Seq: seq, Bucket: bucket,
		Entities: []graph.Entity{{Ref: app, Props: map[string]string{"name": "app"}, EndedAt: ended}, {Ref: nats, Props: map[string]string{"name": "nats"}}, {Ref: node}},
		Links:    []graph.Link{{Type: graph.RelRunsOn, From: app, To: node}},
		Edges: []graph.EdgeDelta{{EdgeKey: graph.EdgeKey{From: app, To: nats, Transport: "tcp", Port: 4222},
			Count: count, BytesSent: 10 * count, FirstSeen: int64(seq), LastSeen: int64(seq) + 1}}}
}

func graphOf(t *testing.T, s *memstore.Store) *graph.Graph {
	t.Helper()
	g, err := s.Graph(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestRetainDropsWholeBuckets: a store given batches of three buckets and
// cut after the first holds what the last two alone give (counts, ends),
// survives a save and a load, and a cut at or before the recorded one
// changes nothing. Bucket 0 (no retention) is never dropped.
func TestRetainDropsWholeBuckets(t *testing.T) {
	ctx := context.Background()
	all, kept := memstore.New(), memstore.New()
	for _, b := range []*graph.Batch{batch(1, 100, 3, 7), batch(2, 200, 2, 0), batch(3, 300, 1, 0)} {
		if err := all.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		if b.Bucket >= 200 {
			if err := kept.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := all.Retain(ctx, 200); err != nil {
		t.Fatal(err)
	}
	want := graphOf(t, kept)
	if got := graphOf(t, all); !reflect.DeepEqual(got, want) {
		t.Fatalf("cut at 200:\n%+v\nwant what buckets 200 and 300 alone give:\n%+v", got, want)
	}
	if err := all.Retain(ctx, 150); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := all.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := memstore.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if from, _ := loaded.RetainedFrom(ctx); from != 200 || !reflect.DeepEqual(graphOf(t, loaded), want) {
		t.Fatalf("loaded: cut %d, graph %+v; want 200 and %+v", from, graphOf(t, loaded), want)
	}

	old := memstore.New()
	if err := old.Apply(ctx, batch(1, 0, 3, 7)); err != nil {
		t.Fatal(err)
	}
	before := graphOf(t, old)
	if err := old.Retain(ctx, 1<<62); err != nil {
		t.Fatal(err)
	}
	if got := graphOf(t, old); !reflect.DeepEqual(got, before) {
		t.Fatalf("bucket 0 cut: %+v, want it kept", got)
	}
}

// TestLoadVersion1: a snapshot written before retention buckets (version
// 1: one batch) loads as it was saved.
func TestLoadVersion1(t *testing.T) {
	dir := t.TempDir()
	v1 := `{"version":1,"last_seq":9,"entities":[{"Ref":{"Label":"Pod","K1":"uid-app","K2":"","K3":""},"Props":{"name":"app"},"Broker":""},` +
		`{"Ref":{"Label":"Pod","K1":"uid-nats","K2":"","K3":""},"Props":{"name":"nats"},"Broker":"nats"}],` +
		`"links":[],"edges":[{"From":{"Label":"Pod","K1":"uid-app","K2":"","K3":""},"To":{"Label":"Pod","K1":"uid-nats","K2":"","K3":""},` +
		`"Transport":"tcp","Port":4222,"Path":"","Count":5,"BytesSent":50,"BytesReceived":0,"Errors":0,"FirstSeen":1,"LastSeen":2}]}`
	if err := os.WriteFile(filepath.Join(dir, memstore.SnapshotFile), []byte(v1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := memstore.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := graphOf(t, s)
	if seq, _ := s.LastSeq(context.Background()); seq != 9 || len(g.Nodes) != 2 || len(g.Edges) != 1 || g.Edges[0].Props["count"] != uint64(5) ||
		g.Nodes[1].Props["kind"] != "nats" {
		t.Fatalf("version 1 snapshot loaded as seq %d, %+v", seq, g)
	}
}
