// Package memstore is the embedded graph store: the graph in memory,
// served on /api/v1/graph, saved as a snapshot file (graph and last applied
// CALLS sequence) so a restart loads it and replays only the stream's tail.
//
// All methods are safe for concurrent use.
package memstore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/weftobs/weft/correlator/graph"
)

// Store is the embedded store.
type Store struct {
	mu      sync.RWMutex
	nodes   map[graph.Ref]*node
	links   map[graph.Link]struct{}
	edges   map[graph.EdgeKey]*graph.EdgeDelta
	lastSeq uint64
	dirty   bool
}

type node struct {
	props   map[string]string
	broker  string
	endedAt int64
}

var (
	_ graph.Store  = (*Store)(nil)
	_ graph.Reader = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{nodes: map[graph.Ref]*node{}, links: map[graph.Link]struct{}{}, edges: map[graph.EdgeKey]*graph.EdgeDelta{}}
}

// Apply implements graph.Store.
func (s *Store) Apply(_ context.Context, b *graph.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.Seq != 0 && b.Seq <= s.lastSeq {
		return nil
	}
	for _, e := range b.Entities {
		n := s.nodes[e.Ref]
		if n == nil {
			n = &node{}
			s.nodes[e.Ref] = n
		}
		if e.Props != nil {
			n.props = e.Props
		}
		if e.Broker != "" {
			n.broker = e.Broker
		}
		if e.EndedAt != 0 && (n.endedAt == 0 || e.EndedAt < n.endedAt) {
			n.endedAt = e.EndedAt
		}
	}
	for _, l := range b.Links {
		s.links[l] = struct{}{}
	}
	for _, d := range b.Edges {
		cur := s.edges[d.EdgeKey]
		if cur == nil {
			c := d
			s.edges[d.EdgeKey] = &c
			continue
		}
		cur.Count += d.Count
		cur.BytesSent += d.BytesSent
		cur.BytesReceived += d.BytesReceived
		cur.Errors += d.Errors
		cur.FirstSeen = min(cur.FirstSeen, d.FirstSeen)
		cur.LastSeen = max(cur.LastSeen, d.LastSeen)
	}
	if b.Seq > s.lastSeq {
		s.lastSeq = b.Seq
	}
	s.dirty = true
	return nil
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
	for k, d := range s.edges {
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

type snapshot struct {
	Version  int               `json:"version"`
	LastSeq  uint64            `json:"last_seq"`
	Entities []graph.Entity    `json:"entities"`
	Links    []graph.Link      `json:"links"`
	Edges    []graph.EdgeDelta `json:"edges"`
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
	snap := snapshot{Version: 1, LastSeq: s.lastSeq}
	for r, n := range s.nodes {
		snap.Entities = append(snap.Entities, graph.Entity{Ref: r, Props: n.props, Broker: n.broker, EndedAt: n.endedAt})
	}
	for l := range s.links {
		snap.Links = append(snap.Links, l)
	}
	for _, d := range s.edges {
		snap.Edges = append(snap.Edges, *d)
	}
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
	b := &graph.Batch{Seq: snap.LastSeq, Entities: snap.Entities, Links: snap.Links, Edges: snap.Edges}
	if err := s.Apply(context.Background(), b); err != nil {
		return nil, err
	}
	s.dirty = false
	return s, nil
}
