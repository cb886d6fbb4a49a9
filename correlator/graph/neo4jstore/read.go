package neo4jstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/query"
)

var _ graph.Reader = (*Store)(nil)

// Graph implements graph.Reader: the whole graph in the shape of
// /api/v1/graph, sorted, so it compares with the embedded store's (the
// export package's JSON of both is the same for the same batches). It
// reads everything in one transaction: it is for export and tests, not
// for a graph of millions of edges.
func (s *Store) Graph(ctx context.Context) (*graph.Graph, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		nodes, err := collect(ctx, tx, readNodes, nil)
		if err != nil {
			return nil, err
		}
		rels, err := collect(ctx, tx, readRels, nil)
		if err != nil {
			return nil, err
		}
		return toGraph(nodes, rels), nil
	})
	if err != nil {
		return nil, fmt.Errorf("neo4j: read the graph: %w", err)
	}
	return v.(*graph.Graph), nil
}

// toGraph builds the graph from the rows of readNodes and readRels, with
// the properties as Neo4j holds them: a CALLS relationship has port (TCP)
// or path (unix), never both, as in the embedded store.
func toGraph(nodes, rels []map[string]any) *graph.Graph {
	g := &graph.Graph{Nodes: make([]graph.GNode, 0, len(nodes)), Edges: make([]graph.GEdge, 0, len(rels))}
	for _, n := range nodes {
		props, _ := n["props"].(map[string]any)
		r, broker, ok := refOf(n["labels"], props)
		if !ok {
			continue
		}
		labels := []string{r.Label}
		if broker {
			labels = append(labels, graph.LabelBroker)
		}
		g.Nodes = append(g.Nodes, graph.GNode{ID: r.ID(), Labels: labels, Props: orEmpty(props)})
	}
	for _, e := range rels {
		fp, _ := e["from_props"].(map[string]any)
		tp, _ := e["to_props"].(map[string]any)
		from, _, okf := refOf(e["from_labels"], fp)
		to, _, okt := refOf(e["to_labels"], tp)
		typ, _ := e["type"].(string)
		if !okf || !okt {
			continue
		}
		props := orEmpty(e["props"])
		g.Edges = append(g.Edges, graph.GEdge{From: from.ID(), To: to.ID(), Type: typ, Props: props})
	}
	g.Sort()
	return g
}

// refOf names a node by its graph label and key properties, and reports
// whether it is labelled a broker.
func refOf(labels any, props map[string]any) (r graph.Ref, broker, ok bool) {
	ls, _ := labels.([]any)
	for _, l := range ls {
		name, _ := l.(string)
		if name == graph.LabelBroker {
			broker = true
			continue
		}
		keys, known := keyProps[name]
		if !known || ok {
			continue
		}
		r, ok = graph.Ref{Label: name}, true
		parts := []*string{&r.K1, &r.K2, &r.K3}
		for i, k := range keys {
			*parts[i], _ = props[k].(string)
		}
	}
	return r, broker, ok
}

// orEmpty copies the properties v holds, leaving out weft's own (named
// _…: retention buckets).
func orEmpty(v any) map[string]any {
	m, _ := v.(map[string]any)
	out := make(map[string]any, len(m))
	for k, x := range m {
		if !strings.HasPrefix(k, "_") {
			out[k] = x
		}
	}
	return out
}

// Answer runs the named query q with its argument in a read transaction.
func (s *Store) Answer(ctx context.Context, q *query.Query, arg any) (*query.Result, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		return collect(ctx, tx, q.Cypher, map[string]any{"arg": arg})
	})
	if err != nil {
		return nil, fmt.Errorf("neo4j: query %s: %w", q.Name, err)
	}
	rows, _ := v.([]map[string]any)
	return q.FromRows(rows), nil
}
