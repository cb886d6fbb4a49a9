// Package graph is weft's graph model (DESIGN.md, "The graph"): the node
// labels and their keys, the fold of calls into graph changes (Fold), the
// broker rules, the Store interface the embedded and Neo4j stores
// implement, and the JSON shape of /api/v1/graph.
//
// It knows no store and no stream: it turns schema.Calls into Batches.
package graph

import (
	"context"
	"sort"
	"strconv"
)

// Labels of the graph's nodes.
const (
	LabelNode      = "Node"
	LabelPod       = "Pod"
	LabelContainer = "Container"
	LabelWorkload  = "Workload"
	LabelProcess   = "Process"
	LabelExternal  = "External"
	LabelBroker    = "Broker"
)

// Relationship types.
const (
	RelRunsOn       = "RUNS_ON"
	RelHasContainer = "HAS_CONTAINER"
	RelOwns         = "OWNS"
	RelCalls        = "CALLS"
)

// Ref names one graph node by its label and key: Node{name}, Pod{uid},
// Container{id}, Workload{kind, namespace, name}, Process{node, exe},
// External{address}. Unused key parts are empty.
type Ref struct {
	Label      string
	K1, K2, K3 string
}

// ID is the node's id in /api/v1/graph: label and key, e.g. "Pod:uid-1".
func (r Ref) ID() string {
	s := r.Label + ":" + r.K1
	if r.K2 != "" || r.K3 != "" {
		s += "/" + r.K2
	}
	if r.K3 != "" {
		s += "/" + r.K3
	}
	return s
}

// Key is the node's key properties, as Cypher MERGE needs them.
func (r Ref) Key() map[string]any {
	switch r.Label {
	case LabelNode:
		return map[string]any{"name": r.K1}
	case LabelPod:
		return map[string]any{"uid": r.K1}
	case LabelContainer:
		return map[string]any{"id": r.K1}
	case LabelWorkload:
		return map[string]any{"kind": r.K1, "namespace": r.K2, "name": r.K3}
	case LabelProcess:
		return map[string]any{"node": r.K1, "exe": r.K2}
	default:
		return map[string]any{"address": r.K1}
	}
}

// Entity is one node upsert: its key, its other properties (strings only),
// its broker kind if it matched a rule, and, for a pod deleted (and its
// containers), when it ended.
type Entity struct {
	Ref    Ref
	Props  map[string]string
	Broker string
	// EndedAt is when the pod was deleted (Unix nanoseconds), 0 while it
	// runs. A store keeps the earliest end it is given: an end is never
	// undone by a later upsert (a late call of the pod), and the same end
	// given twice (a redelivery) changes nothing.
	EndedAt int64
}

// PropEndedAt is the property an ended pod or container carries in every
// store and in /api/v1/graph: its end in Unix nanoseconds, as first_seen
// and last_seen of an edge.
const PropEndedAt = "ended_at"

// Link is a structural relationship (RUNS_ON, HAS_CONTAINER, OWNS): it is
// merged, never counted.
type Link struct {
	Type     string
	From, To Ref
}

// EdgeKey identifies a CALLS relationship.
type EdgeKey struct {
	From, To  Ref
	Transport string // "tcp" or "unix"
	Port      uint32
	Path      string
}

// EdgeDelta is what a batch adds to one CALLS relationship.
type EdgeDelta struct {
	EdgeKey
	Count, BytesSent, BytesReceived, Errors uint64
	// FirstSeen and LastSeen are Unix nanoseconds.
	FirstSeen, LastSeen int64
}

// Batch is one write: every change folded since the last one, and the
// stream sequence it brings the store to. A store applies a batch
// atomically with Seq and ignores a batch whose Seq it has already
// reached, so a batch written twice changes nothing.
type Batch struct {
	Seq      uint64
	Entities []Entity
	Links    []Link
	Edges    []EdgeDelta
	// Calls is how many calls were folded in (for the writes ratio).
	Calls uint64
	// Bucket is the retention bucket of every change in the batch: the
	// start (Unix nanoseconds) of the interval of CALLS stream time its
	// messages were stored in, 0 with no retention. A store keeps edge
	// counts per bucket and the last bucket that named each node and
	// link, so Retainer.Retain drops exactly what whole buckets brought
	// (docs/lifecycle.md).
	Bucket int64
}

// Rows is the number of row upserts the batch costs.
func (b *Batch) Rows() int { return len(b.Entities) + len(b.Links) + len(b.Edges) }

// Store is where batches go.
type Store interface {
	// Apply writes b and records b.Seq in the same transaction; a batch
	// with b.Seq at or below the recorded one is skipped.
	Apply(ctx context.Context, b *Batch) error
	// LastSeq is the recorded sequence.
	LastSeq(ctx context.Context) (uint64, error)
	// Close releases the store.
	Close(ctx context.Context) error
}

// Retainer is a store that drops what older retention buckets brought.
type Retainer interface {
	// Retain drops every bucket before cut (Unix nanoseconds, a bucket's
	// start): an edge's counts from those buckets (the edge itself when
	// no later bucket counted it), the nodes and links no later bucket
	// named, the ends no later bucket gave. It records cut, and a cut at
	// or before the one recorded changes nothing. The store then holds
	// what a replay of its stream from cut gives.
	Retain(ctx context.Context, cut int64) error
	// RetainedFrom is the cut recorded, 0 when none.
	RetainedFrom(ctx context.Context) (int64, error)
}

// Reader is a store that can return the whole graph (the embedded one).
type Reader interface {
	Graph(ctx context.Context) (*Graph, error)
}

// Graph is the JSON shape of GET /api/v1/graph.
type Graph struct {
	Nodes []GNode `json:"nodes"`
	Edges []GEdge `json:"edges"`
}

// GNode is a node of Graph.
type GNode struct {
	ID     string         `json:"id"`
	Labels []string       `json:"labels"`
	Props  map[string]any `json:"props"`
}

// GEdge is a relationship of Graph.
type GEdge struct {
	From  string         `json:"from"`
	To    string         `json:"to"`
	Type  string         `json:"type"`
	Props map[string]any `json:"props"`
}

// Sort orders nodes by id and edges by (from, to, type, props), so equal
// graphs compare equal.
func (g *Graph) Sort() {
	sort.Slice(g.Nodes, func(a, b int) bool { return g.Nodes[a].ID < g.Nodes[b].ID })
	key := func(e GEdge) string {
		return e.From + "\x00" + e.To + "\x00" + e.Type + "\x00" + str(e.Props["transport"]) + "\x00" + str(e.Props["port"]) + "\x00" + str(e.Props["path"])
	}
	sort.Slice(g.Edges, func(a, b int) bool { return key(g.Edges[a]) < key(g.Edges[b]) })
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return ""
}
