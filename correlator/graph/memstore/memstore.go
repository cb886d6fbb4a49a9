// Package memstore is the embedded graph store: the graph in memory,
// served on /api/v1/graph, saved as a snapshot file (graph and last applied
// CALLS sequence) so a restart loads it and replays only the stream's tail.
//
// All methods are safe for concurrent use.
package memstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/weftobs/weft/correlator/graph"
)

// Store is the embedded store.
type Store struct {
	mu    sync.RWMutex
	nodes map[graph.Ref]*node
	links map[graph.Link]int64 // → the last retention bucket that named it
	// edges are the CALLS counts per edge and retention bucket.
	edges        map[graph.EdgeKey]map[int64]*graph.EdgeDelta
	lastSeq      uint64
	retainedFrom int64
	dirty        bool
}

type node struct {
	props       map[string]string
	broker      string
	endedAt     int64
	endedBucket int64 // the last bucket that gave endedAt
	bucket      int64 // the last bucket that named it
}

var (
	_ graph.Store    = (*Store)(nil)
	_ graph.Reader   = (*Store)(nil)
	_ graph.Retainer = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{nodes: map[graph.Ref]*node{}, links: map[graph.Link]int64{}, edges: map[graph.EdgeKey]map[int64]*graph.EdgeDelta{}}
}

// Apply implements graph.Store.
func (s *Store) Apply(_ context.Context, b *graph.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.Seq != 0 && b.Seq <= s.lastSeq {
		return nil
	}
	s.apply(b)
	if b.Seq > s.lastSeq {
		s.lastSeq = b.Seq
	}
	s.dirty = true
	return nil
}

// apply adds b's changes; s.mu is held.
func (s *Store) apply(b *graph.Batch) {
	bk := b.Bucket
	for _, e := range b.Entities {
		n := s.nodes[e.Ref]
		if n == nil {
			n = &node{bucket: bk}
			s.nodes[e.Ref] = n
		}
		n.bucket = max(n.bucket, bk)
		if e.Props != nil {
			n.props = e.Props
		}
		if e.Broker != "" {
			n.broker = e.Broker
		}
		switch {
		case e.EndedAt == 0:
		case n.endedAt == 0 || e.EndedAt < n.endedAt:
			n.endedAt, n.endedBucket = e.EndedAt, bk
		case e.EndedAt == n.endedAt:
			n.endedBucket = max(n.endedBucket, bk)
		}
	}
	for _, l := range b.Links {
		if prev, ok := s.links[l]; !ok || bk > prev {
			s.links[l] = bk
		}
	}
	for _, d := range b.Edges {
		byBucket := s.edges[d.EdgeKey]
		if byBucket == nil {
			byBucket = map[int64]*graph.EdgeDelta{}
			s.edges[d.EdgeKey] = byBucket
		}
		cur := byBucket[bk]
		if cur == nil {
			c := d
			byBucket[bk] = &c
			continue
		}
		cur.Count += d.Count
		cur.BytesSent += d.BytesSent
		cur.BytesReceived += d.BytesReceived
		cur.Errors += d.Errors
		cur.FirstSeen = min(cur.FirstSeen, d.FirstSeen)
		cur.LastSeen = max(cur.LastSeen, d.LastSeen)
	}
}

// Retain implements graph.Retainer.
func (s *Store) Retain(_ context.Context, cut int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cut <= s.retainedFrom {
		return nil
	}
	// Bucket 0 is what was written with no retention: kept, as it cannot
	// be told apart (docs/lifecycle.md).
	old := func(bk int64) bool { return bk != 0 && bk < cut }
	for k, byBucket := range s.edges {
		for bk := range byBucket {
			if old(bk) {
				delete(byBucket, bk)
			}
		}
		if len(byBucket) == 0 {
			delete(s.edges, k)
		}
	}
	// A link's ends were named in every batch that named it, so a link
	// kept never loses an end.
	for l, bk := range s.links {
		if old(bk) {
			delete(s.links, l)
		}
	}
	for r, n := range s.nodes {
		switch {
		case old(n.bucket):
			delete(s.nodes, r)
		case n.endedAt != 0 && old(n.endedBucket):
			n.endedAt, n.endedBucket = 0, 0
		}
	}
	s.retainedFrom = cut
	s.dirty = true
	return nil
}

// RetainedFrom implements graph.Retainer.
func (s *Store) RetainedFrom(context.Context) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.retainedFrom, nil
}

// edge sums an edge's counts over its buckets.
func edge(byBucket map[int64]*graph.EdgeDelta) graph.EdgeDelta {
	var out graph.EdgeDelta
	first := true
	for _, d := range byBucket {
		if first {
			out, first = *d, false
			continue
		}
		out.Count += d.Count
		out.BytesSent += d.BytesSent
		out.BytesReceived += d.BytesReceived
		out.Errors += d.Errors
		out.FirstSeen = min(out.FirstSeen, d.FirstSeen)
		out.LastSeen = max(out.LastSeen, d.LastSeen)
	}
	return out
}

// LastSeq implements graph.Store.
func (s *Store) LastSeq(context.Context) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastSeq, nil
}

// Close implements graph.Store.
func (s *Store) Close(context.Context) error { return nil }

// Graph implements graph.Reader: a sorted copy of the whole graph.
func (s *Store) Graph(context.Context) (*graph.Graph, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g := &graph.Graph{Nodes: make([]graph.GNode, 0, len(s.nodes)), Edges: make([]graph.GEdge, 0, len(s.links)+len(s.edges))}
	for r, n := range s.nodes {
		props := map[string]any{}
		for k, v := range r.Key() {
			props[k] = v
		}
		for k, v := range n.props {
			props[k] = v
		}
		if n.endedAt != 0 {
			props[graph.PropEndedAt] = n.endedAt
		}
		labels := []string{r.Label}
		if n.broker != "" {
			labels = append(labels, graph.LabelBroker)
			props["kind"] = n.broker // brokers are pods, containers, processes: no key named kind
		}
		g.Nodes = append(g.Nodes, graph.GNode{ID: r.ID(), Labels: labels, Props: props})
	}
	for l := range s.links {
		g.Edges = append(g.Edges, graph.GEdge{From: l.From.ID(), To: l.To.ID(), Type: l.Type, Props: map[string]any{}})
	}
	for k, byBucket := range s.edges {
		d := edge(byBucket)
		props := map[string]any{
			"transport": k.Transport, "count": d.Count, "bytes_sent": d.BytesSent, "bytes_received": d.BytesReceived,
			"errors": d.Errors, "first_seen": d.FirstSeen, "last_seen": d.LastSeen,
		}
		if k.Transport == "unix" {
			props["path"] = k.Path
		} else {
			props["port"] = k.Port
		}
		g.Edges = append(g.Edges, graph.GEdge{From: k.From.ID(), To: k.To.ID(), Type: graph.RelCalls, Props: props})
	}
	g.Sort()
	return g, nil
}

// Stats is the store's size.
func (s *Store) Stats() (nodes, edges int, lastSeq uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.nodes), len(s.links) + len(s.edges), s.lastSeq
}

// snapshot is the file Save writes. Version 1 holds the graph as one
// batch (Entities, Links, Edges); version 2 holds it as one batch per
// retention bucket (Batches), which Load applies in bucket order.
type snapshot struct {
	Version      int               `json:"version"`
	LastSeq      uint64            `json:"last_seq"`
	RetainedFrom int64             `json:"retained_from,omitempty"`
	Entities     []graph.Entity    `json:"entities,omitempty"`
	Links        []graph.Link      `json:"links,omitempty"`
	Edges        []graph.EdgeDelta `json:"edges,omitempty"`
	Batches      []*graph.Batch    `json:"batches,omitempty"`
}

// SnapshotFile is the snapshot's name inside a data dir.
const SnapshotFile = "graph.json"

// Save writes the store to dir/graph.json atomically (temp file + rename)
// if it changed since the last Save.
func (s *Store) Save(dir string) error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	snap := snapshot{Version: 2, LastSeq: s.lastSeq, RetainedFrom: s.retainedFrom}
	batches := map[int64]*graph.Batch{}
	in := func(bk int64) *graph.Batch {
		b := batches[bk]
		if b == nil {
			b = &graph.Batch{Bucket: bk}
			batches[bk] = b
			snap.Batches = append(snap.Batches, b)
		}
		return b
	}
	for r, n := range s.nodes {
		b := in(n.bucket)
		b.Entities = append(b.Entities, graph.Entity{Ref: r, Props: n.props, Broker: n.broker})
		if n.endedAt != 0 {
			b := in(n.endedBucket) // never after n.bucket: an end names its node
			b.Entities = append(b.Entities, graph.Entity{Ref: r, EndedAt: n.endedAt})
		}
	}
	for l, bk := range s.links {
		b := in(bk)
		b.Links = append(b.Links, l)
	}
	for _, byBucket := range s.edges {
		for bk, d := range byBucket {
			b := in(bk)
			b.Edges = append(b.Edges, *d)
		}
	}
	slices.SortFunc(snap.Batches, func(a, b *graph.Batch) int { return cmp.Compare(a.Bucket, b.Bucket) })
	s.dirty = false
	s.mu.Unlock()
	data, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode graph snapshot: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save graph snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, SnapshotFile+".*")
	if err != nil {
		return fmt.Errorf("save graph snapshot: %w", err)
	}
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, SnapshotFile))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("save graph snapshot in %s: %w", dir, err)
	}
	return nil
}

// Load reads dir/graph.json into a new store; a missing file gives an
// empty store.
func Load(dir string) (*Store, error) {
	s := New()
	data, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	if os.IsNotExist(err) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load graph snapshot: %w", err)
	}
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("load graph snapshot %s: %w", filepath.Join(dir, SnapshotFile), err)
	}
	switch snap.Version {
	case 1:
		s.apply(&graph.Batch{Entities: snap.Entities, Links: snap.Links, Edges: snap.Edges})
	case 2:
		slices.SortFunc(snap.Batches, func(a, b *graph.Batch) int { return cmp.Compare(a.Bucket, b.Bucket) })
		for _, b := range snap.Batches {
			s.apply(b)
		}
	default:
		return nil, fmt.Errorf("load graph snapshot %s: version %d, this build reads 1 and 2", filepath.Join(dir, SnapshotFile), snap.Version)
	}
	s.lastSeq, s.retainedFrom = snap.LastSeq, snap.RetainedFrom
	return s, nil
}
