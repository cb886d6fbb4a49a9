package neo4jstore

import (
	"reflect"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
)

// TestToGraph: rows as Neo4j returns them (labels in any order, port on
// TCP CALLS and path on unix ones, integers as int64) become the embedded
// store's shape; rows of nodes that are not the graph's are left out.
func TestToGraph(t *testing.T) {
	pod := map[string]any{"uid": "u1", "name": "app", "namespace": "shop", "ip": "10.0.0.1"}
	nats := map[string]any{"uid": "u2", "name": "nats-0", "namespace": "infra", "ip": "10.0.0.2", "kind": "nats"}
	proc := map[string]any{"node": "n1", "exe": "/usr/bin/x"}
	wl := map[string]any{"kind": "Deployment", "namespace": "shop", "name": "app"}
	c1, c2 := map[string]any{"id": "c1", "name": "app"}, map[string]any{"id": "c2", "name": "signer", "kind": "crypto-broker"}
	nodes := []map[string]any{
		{"labels": []any{"Broker", "Pod"}, "props": nats},
		{"labels": []any{"Pod"}, "props": pod},
		{"labels": []any{"Process"}, "props": proc},
		{"labels": []any{"Workload"}, "props": wl},
		{"labels": []any{"Container"}, "props": c1},
		{"labels": []any{"Container", "Broker"}, "props": c2},
		{"labels": []any{"Unrelated"}, "props": map[string]any{"x": "y"}},
	}
	calls := func(transport string, port int64, path string) map[string]any {
		m := map[string]any{"transport": transport, "count": int64(3), "bytes_sent": int64(10),
			"bytes_received": int64(20), "errors": int64(0), "first_seen": int64(1767225600000001123), "last_seen": int64(1767225600002001123)}
		if transport == "unix" {
			m["path"] = path
		} else {
			m["port"] = port
		}
		return m
	}
	rels := []map[string]any{
		{"from_labels": []any{"Pod"}, "from_props": pod, "type": "CALLS", "props": calls("tcp", 4222, ""), "to_labels": []any{"Pod", "Broker"}, "to_props": nats},
		{"from_labels": []any{"Container"}, "from_props": c1, "type": "CALLS", "props": calls("unix", 0, "/run/x.sock"), "to_labels": []any{"Broker", "Container"}, "to_props": c2},
		{"from_labels": []any{"Workload"}, "from_props": wl, "type": "OWNS", "props": map[string]any{}, "to_labels": []any{"Pod"}, "to_props": pod},
		{"from_labels": []any{"Process"}, "from_props": proc, "type": "CALLS", "props": calls("tcp", 443, ""), "to_labels": []any{"Unrelated"}, "to_props": map[string]any{}},
	}
	g := toGraph(nodes, rels)
	var ids []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID+" "+n.Labels[len(n.Labels)-1])
	}
	wantIDs := []string{"Container:c1 Container", "Container:c2 Broker", "Pod:u1 Pod", "Pod:u2 Broker", "Process:n1//usr/bin/x Process", "Workload:Deployment/shop/app Workload"}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Errorf("nodes %q, want %q", ids, wantIDs)
	}
	if len(g.Edges) != 3 {
		t.Fatalf("%d edges, want 3 (the one to an unrelated node left out): %+v", len(g.Edges), g.Edges)
	}
	byType := map[string]graph.GEdge{}
	for _, e := range g.Edges {
		byType[e.Type+" "+e.From] = e
	}
	tcp, unix, owns := byType["CALLS Pod:u1"], byType["CALLS Container:c1"], byType["OWNS Workload:Deployment/shop/app"]
	if _, ok := tcp.Props["path"]; ok || tcp.Props["port"] != int64(4222) || tcp.To != "Pod:u2" {
		t.Errorf("tcp CALLS %+v: want port 4222 and no path, to Pod:u2", tcp)
	}
	if _, ok := unix.Props["port"]; ok || unix.Props["path"] != "/run/x.sock" || unix.Props["first_seen"] != int64(1767225600000001123) {
		t.Errorf("unix CALLS %+v: want the path, no port, first_seen exact", unix)
	}
	if owns.To != "Pod:u1" || owns.Props == nil || len(owns.Props) != 0 {
		t.Errorf("OWNS %+v: want to Pod:u1 with empty props", owns)
	}
	pod["name"] = "changed"
	if g.Nodes[2].Props["name"] != "app" {
		t.Error("the graph shares its props maps with the rows")
	}
}
