// Package export renders a graph (the JSON of /api/v1/graph) as JSON,
// Cypher that loads it into an empty Neo4j with cypher-shell, or Graphviz
// DOT. It reads and writes no store.
package export

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/weftobs/weft/correlator/graph"
)

// Formats are the formats Write knows.
var Formats = []string{"json", "cypher", "dot"}

// Write renders g in format to w.
func Write(w io.Writer, g *graph.Graph, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(g)
	case "cypher":
		for _, s := range CypherStatements(g) {
			if _, err := io.WriteString(w, s+";\n"); err != nil {
				return err
			}
		}
		return nil
	case "dot":
		return writeDOT(w, g)
	}
	return fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

// CypherStatements are literal statements (no parameters, so cypher-shell
// runs them as they are): one MERGE per node with its key, then its other
// properties; one MATCH … MERGE per relationship with its key — a CALLS
// relationship's transport and its port (TCP) or path (unix), as the
// Neo4j store merges it — then its other properties. Loading an export
// twice, or into a database the live writer then writes on, never makes
// a second relationship for one key: the writer adds to its counts.
func CypherStatements(g *graph.Graph) []string {
	keyOf := map[string]string{}
	var out []string
	for _, n := range g.Nodes {
		label := n.Labels[0]
		keys := keyNames[label]
		pat := "(n:" + ident(label) + " " + mapLit(n.Props, keys) + ")"
		keyOf[n.ID] = ident(label) + " " + mapLit(n.Props, keys)
		s := "MERGE " + pat
		var rest []string
		for _, k := range sortedKeys(n.Props) {
			if !contains(keys, k) {
				rest = append(rest, "n."+ident(k)+" = "+lit(n.Props[k]))
			}
		}
		for _, l := range n.Labels[1:] {
			s += " SET n:" + ident(l)
		}
		if len(rest) > 0 {
			s += " SET " + strings.Join(rest, ", ")
		}
		out = append(out, s)
	}
	for _, e := range g.Edges {
		a, b := keyOf[e.From], keyOf[e.To]
		if a == "" || b == "" {
			continue
		}
		keys := edgeKeys(e)
		rel := "[r:" + ident(e.Type) + "]"
		if len(keys) > 0 {
			rel = "[r:" + ident(e.Type) + " " + mapLit(e.Props, keys) + "]"
		}
		s := "MATCH (a:" + a + ") MATCH (b:" + b + ") MERGE (a)-" + rel + "->(b)"
		var sets []string
		for _, k := range sortedKeys(e.Props) {
			if !contains(keys, k) {
				sets = append(sets, "r."+ident(k)+" = "+lit(e.Props[k]))
			}
		}
		if len(sets) > 0 {
			s += " SET " + strings.Join(sets, ", ")
		}
		out = append(out, s)
	}
	return out
}

// edgeKeys are the properties that key e among the relationships of its
// type between its two nodes: for CALLS, transport and port or path;
// other types have at most one relationship per pair.
func edgeKeys(e graph.GEdge) []string {
	if e.Type != graph.RelCalls {
		return nil
	}
	if e.Props["transport"] == "unix" {
		return []string{"transport", "path"}
	}
	return []string{"transport", "port"}
}

var keyNames = map[string][]string{
	graph.LabelNode: {"name"}, graph.LabelPod: {"uid"}, graph.LabelContainer: {"id"},
	graph.LabelWorkload: {"kind", "namespace", "name"}, graph.LabelProcess: {"node", "exe"}, graph.LabelExternal: {"address"},
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func mapLit(props map[string]any, keys []string) string {
	var parts []string
	for _, k := range keys {
		parts = append(parts, ident(k)+": "+lit(props[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func ident(s string) string {
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return "`" + strings.ReplaceAll(s, "`", "``") + "`"
		}
	}
	return s
}

func lit(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`)
		return "'" + r.Replace(x) + "'"
	case float64:
		if x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case int, int64, uint32, uint64:
		return fmt.Sprint(x)
	}
	b, _ := json.Marshal(v)
	return lit(string(b))
}

func writeDOT(w io.Writer, g *graph.Graph) error {
	var b strings.Builder
	b.WriteString("digraph weft {\n  rankdir=LR;\n  node [shape=box];\n")
	for _, n := range g.Nodes {
		label := strings.Join(n.Labels, ":")
		if name, ok := n.Props["name"].(string); ok {
			label += "\n" + name
		} else {
			label += "\n" + strings.SplitN(n.ID, ":", 2)[1]
		}
		fmt.Fprintf(&b, "  %s [label=%s];\n", dotQuote(n.ID), dotQuote(label))
	}
	for _, e := range g.Edges {
		label := e.Type
		if c, ok := e.Props["count"]; ok {
			label += fmt.Sprintf(" ×%v", lit(c))
		}
		fmt.Fprintf(&b, "  %s -> %s [label=%s];\n", dotQuote(e.From), dotQuote(e.To), dotQuote(label))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotQuote is s as a DOT string: quotes and backslashes escaped, a line
// break as DOT's \n (a label's line break, not a backslash and an n).
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// Sample is a small graph of every label and relationship, to lint the
// export's statements.
func Sample() *graph.Graph {
	return &graph.Graph{
		Nodes: []graph.GNode{
			{ID: "Node:n1", Labels: []string{"Node"}, Props: map[string]any{"name": "n1"}},
			{ID: "Pod:u1", Labels: []string{"Pod"}, Props: map[string]any{"uid": "u1", "name": "app", "namespace": "shop", "ip": "10.0.0.1"}},
			{ID: "Pod:u2", Labels: []string{"Pod", "Broker"}, Props: map[string]any{"uid": "u2", "name": "nats-0", "namespace": "infra", "ip": "10.0.0.2", "kind": "nats"}},
			{ID: "Container:c1", Labels: []string{"Container"}, Props: map[string]any{"id": "c1", "name": "app", "image": "app:1"}},
			{ID: "Workload:Deployment/shop/app", Labels: []string{"Workload"}, Props: map[string]any{"kind": "Deployment", "namespace": "shop", "name": "app"}},
			{ID: "Process:n1/usr/bin/x", Labels: []string{"Process"}, Props: map[string]any{"node": "n1", "exe": "/usr/bin/x"}},
			{ID: "External:1.2.3.4", Labels: []string{"External"}, Props: map[string]any{"address": "1.2.3.4"}},
		},
		Edges: []graph.GEdge{
			{From: "Pod:u1", To: "Node:n1", Type: "RUNS_ON", Props: map[string]any{}},
			{From: "Pod:u1", To: "Container:c1", Type: "HAS_CONTAINER", Props: map[string]any{}},
			{From: "Workload:Deployment/shop/app", To: "Pod:u1", Type: "OWNS", Props: map[string]any{}},
			{From: "Pod:u1", To: "Pod:u2", Type: "CALLS", Props: map[string]any{"transport": "tcp", "port": float64(4222), "count": float64(3), "bytes_sent": float64(10), "bytes_received": float64(20), "errors": float64(0), "first_seen": float64(1), "last_seen": float64(2)}},
			{From: "Process:n1/usr/bin/x", To: "External:1.2.3.4", Type: "CALLS", Props: map[string]any{"transport": "tcp", "port": float64(443), "count": float64(1)}},
		},
	}
}
