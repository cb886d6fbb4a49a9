package graph_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
)

// selGraph: two namespaces on two machines. shop/web (pod w1, containers
// w1a and w1b talking over a unix socket) calls shop/db (pod d1) and
// infra/nats (pod n1, a broker); n1 calls an external address. The calls
// were last seen at t=100, 200, 300 and 400.
func selGraph() *graph.Graph {
	node := func(id string, props map[string]any, labels ...string) graph.GNode {
		return graph.GNode{ID: id, Labels: append([]string{strings.SplitN(id, ":", 2)[0]}, labels...), Props: props}
	}
	link := func(typ, from, to string) graph.GEdge {
		return graph.GEdge{From: from, To: to, Type: typ, Props: map[string]any{}}
	}
	call := func(from, to string, last int64) graph.GEdge {
		return graph.GEdge{From: from, To: to, Type: graph.RelCalls, Props: map[string]any{"transport": "tcp", "count": uint64(1), "last_seen": last}}
	}
	g := &graph.Graph{
		Nodes: []graph.GNode{
			node("Node:m1", map[string]any{"name": "m1"}),
			node("Node:m2", map[string]any{"name": "m2"}),
			node("Workload:Deployment/shop/web", map[string]any{"namespace": "shop", "name": "web"}),
			node("Workload:Deployment/shop/db", map[string]any{"namespace": "shop", "name": "db"}),
			node("Workload:StatefulSet/infra/nats", map[string]any{"namespace": "infra", "name": "nats"}),
			node("Pod:w1", map[string]any{"namespace": "shop", "name": "web-1"}),
			node("Pod:d1", map[string]any{"namespace": "shop", "name": "db-1"}),
			node("Pod:n1", map[string]any{"namespace": "infra", "name": "nats-0", "kind": "nats"}, graph.LabelBroker),
			node("Container:w1a", map[string]any{"name": "app"}),
			node("Container:w1b", map[string]any{"name": "proxy"}),
			node("External:1.2.3.4:443", map[string]any{"address": "1.2.3.4:443"}),
		},
		Edges: []graph.GEdge{
			link(graph.RelOwns, "Workload:Deployment/shop/web", "Pod:w1"),
			link(graph.RelOwns, "Workload:Deployment/shop/db", "Pod:d1"),
			link(graph.RelOwns, "Workload:StatefulSet/infra/nats", "Pod:n1"),
			link(graph.RelRunsOn, "Pod:w1", "Node:m1"),
			link(graph.RelRunsOn, "Pod:d1", "Node:m1"),
			link(graph.RelRunsOn, "Pod:n1", "Node:m2"),
			link(graph.RelHasContainer, "Pod:w1", "Container:w1a"),
			link(graph.RelHasContainer, "Pod:w1", "Container:w1b"),
			call("Pod:w1", "Pod:d1", 100),
			call("Pod:w1", "Pod:n1", 200),
			call("Container:w1a", "Container:w1b", 300),
			call("Pod:n1", "External:1.2.3.4:443", 400),
		},
	}
	g.Sort()
	return g
}

func TestSelection(t *testing.T) {
	all := selGraph()
	var allIDs []string
	for _, n := range all.Nodes {
		allIDs = append(allIDs, n.ID)
	}
	now := time.Unix(0, 1000)
	tests := []struct {
		query     string
		nodes     []string // want, sorted
		calls     int      // CALLS kept
		wantError string
	}{
		{query: "", nodes: allIDs, calls: 4},
		{query: "namespace=infra", calls: 2, nodes: []string{
			// n1, its workload and machine; w1 calls it (with its workload
			// and machine: what holds a kept node); the address it calls.
			"External:1.2.3.4:443", "Node:m1", "Node:m2", "Pod:n1", "Pod:w1",
			"Workload:Deployment/shop/web", "Workload:StatefulSet/infra/nats"}},
		{query: "namespace=shop", calls: 3, nodes: []string{
			"Container:w1a", "Container:w1b", "Node:m1", "Node:m2", "Pod:d1", "Pod:n1", "Pod:w1",
			"Workload:Deployment/shop/db", "Workload:Deployment/shop/web", "Workload:StatefulSet/infra/nats"}},
		{query: "namespace=shop,infra", nodes: allIDs, calls: 4},
		{query: "namespace=nowhere", nodes: nil, calls: 0},
		// since: 750 ns before now is t=250: the unix call and n1's.
		{query: "since=750ns", calls: 2, nodes: []string{
			"Container:w1a", "Container:w1b", "External:1.2.3.4:443", "Node:m1", "Node:m2", "Pod:n1", "Pod:w1",
			"Workload:Deployment/shop/web", "Workload:StatefulSet/infra/nats"}},
		{query: "since=" + time.Unix(0, 350).UTC().Format(time.RFC3339Nano), calls: 1, nodes: []string{
			"External:1.2.3.4:443", "Node:m2", "Pod:n1", "Workload:StatefulSet/infra/nats"}},
		{query: "node=Pod:d1", calls: 1, nodes: []string{
			"Node:m1", "Pod:d1", "Pod:w1", "Workload:Deployment/shop/db", "Workload:Deployment/shop/web"}},
		{query: "node=Pod:d1&depth=0", calls: 0, nodes: []string{"Node:m1", "Pod:d1", "Workload:Deployment/shop/db"}},
		// A pod reached brings what holds it, not its containers.
		{query: "node=Pod:d1&depth=2", calls: 2, nodes: []string{
			"Node:m1", "Node:m2", "Pod:d1", "Pod:n1", "Pod:w1",
			"Workload:Deployment/shop/db", "Workload:Deployment/shop/web", "Workload:StatefulSet/infra/nats"}},
		// A workload's neighbourhood is its pods' and their containers'.
		{query: "node=Workload:Deployment/shop/web", calls: 3, nodes: []string{
			"Container:w1a", "Container:w1b", "Node:m1", "Node:m2", "Pod:d1", "Pod:n1", "Pod:w1",
			"Workload:Deployment/shop/db", "Workload:Deployment/shop/web", "Workload:StatefulSet/infra/nats"}},
		{query: "node=Node:m2&depth=0", calls: 0, nodes: []string{"Node:m2", "Pod:n1", "Workload:StatefulSet/infra/nats"}},
		{query: "node=Pod:none", nodes: nil},
		{query: "node=Pod:d1&namespace=infra", calls: 0, nodes: nil},
		{query: "since=5", wantError: `since "5"`},
		{query: "since=-5m", wantError: `since "-5m"`},
		{query: "depth=1", wantError: "needs node"},
		{query: "node=Pod:d1&depth=6", wantError: `depth "6"`},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			sel, err := graph.ParseSelection(q, now)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("error %v, want one with %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g := sel.Apply(all)
			var ids []string
			for _, n := range g.Nodes {
				ids = append(ids, n.ID)
			}
			if !slices.Equal(ids, tt.nodes) {
				t.Errorf("nodes\n got %v\nwant %v", ids, tt.nodes)
			}
			calls := 0
			for _, e := range g.Edges {
				if !slices.Contains(ids, e.From) || !slices.Contains(ids, e.To) {
					t.Errorf("edge %s -> %s has an end not selected", e.From, e.To)
				}
				if e.Type == graph.RelCalls {
					calls++
				}
			}
			if calls != tt.calls {
				t.Errorf("%d CALLS, want %d", calls, tt.calls)
			}
			if len(all.Nodes) != len(allIDs) {
				t.Fatal("Apply changed its graph")
			}
		})
	}
}
