// Package query holds the named questions users ask of the graph (who
// calls X, what X calls, what depends on node N, brokers and their
// clients, edges since T, top talkers), each written twice: as Cypher for
// Neo4j (what the README gives for Neo4j Browser) and as Go over the
// graph of /api/v1/graph, for the embedded store. Both return the same
// Result, rows in one order, so either store gives the same answer.
//
// It runs nothing against Neo4j itself: the Neo4j store runs the Cypher.
package query

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/weftobs/weft/correlator/graph"
)

// Query is one named question.
type Query struct {
	Name string
	// Arg names the one argument, "" for none.
	Arg         string
	Description string
	// Cypher answers it in Neo4j; its one parameter is $arg.
	Cypher string
	// columns are the names of Result.Columns.
	columns []string
	// embedded answers it over the whole graph.
	embedded func(g *graph.Graph, arg any) [][]any
	// parse turns the command-line argument into $arg.
	parse func(string) (any, error)
	// ranked queries keep Cypher's order (ORDER BY … LIMIT): the first
	// column is the rank.
	ranked bool
}

// Result is a query's answer: named columns, rows of strings and int64s.
type Result struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// The Cypher for a node's display name, and a CALLS relationship's key.
const (
	nameOf = "coalesce(%[1]s.name, %[1]s.exe, %[1]s.address)"
	viaOf  = "CASE WHEN r.transport = 'unix' THEN r.path ELSE toString(r.port) END"
)

func name(v string) string { return fmt.Sprintf(nameOf, v) }

// All are the named queries, by name.
var All = []*Query{
	{
		Name: "callers", Arg: "NAME", Description: "who calls the pods, containers, processes or addresses named NAME",
		Cypher: "MATCH (a)-[r:CALLS]->(b) WHERE " + name("b") + " = $arg RETURN " + name("a") + " AS caller, " + name("b") + " AS callee, " +
			"r.transport AS transport, " + viaOf + " AS via, r.count AS calls, r.bytes_sent + r.bytes_received AS bytes, r.errors AS errors",
		columns: []string{"caller", "callee", "transport", "via", "calls", "bytes", "errors"},
		embedded: func(g *graph.Graph, arg any) [][]any {
			return calls(g, func(_, to graph.GNode, _ graph.GEdge) bool { return displayName(to) == arg })
		},
	},
	{
		Name: "callees", Arg: "NAME", Description: "what the pods, containers, processes or addresses named NAME call",
		Cypher: "MATCH (a)-[r:CALLS]->(b) WHERE " + name("a") + " = $arg RETURN " + name("a") + " AS caller, " + name("b") + " AS callee, " +
			"r.transport AS transport, " + viaOf + " AS via, r.count AS calls, r.bytes_sent + r.bytes_received AS bytes, r.errors AS errors",
		columns: []string{"caller", "callee", "transport", "via", "calls", "bytes", "errors"},
		embedded: func(g *graph.Graph, arg any) [][]any {
			return calls(g, func(from, _ graph.GNode, _ graph.GEdge) bool { return displayName(from) == arg })
		},
	},
	{
		Name: "blast-radius", Arg: "NODE", Description: "what runs on node NODE, and who calls it (\"\" when nobody does)",
		Cypher: "MATCH (p)-[:RUNS_ON]->(:Node {name: $arg}) OPTIONAL MATCH (c)-[:CALLS]->(p) " +
			"RETURN DISTINCT " + name("p") + " AS runs_on_node, coalesce(" + name("c") + ", '') AS caller",
		columns: []string{"runs_on_node", "caller"},
		embedded: func(g *graph.Graph, arg any) [][]any {
			nodes := byID(g)
			var out [][]any
			seen := map[[2]string]bool{}
			add := func(p, c string) {
				if !seen[[2]string{p, c}] {
					seen[[2]string{p, c}] = true
					out = append(out, []any{p, c})
				}
			}
			for _, l := range g.Edges {
				if l.Type != graph.RelRunsOn || displayName(nodes[l.To]) != arg || !slices.Contains(nodes[l.To].Labels, graph.LabelNode) {
					continue
				}
				called := false
				for _, e := range g.Edges {
					if e.Type == graph.RelCalls && e.To == l.From {
						called = true
						add(displayName(nodes[l.From]), displayName(nodes[e.From]))
					}
				}
				if !called {
					add(displayName(nodes[l.From]), "")
				}
			}
			return out
		},
	},
	{
		Name: "brokers", Description: "every broker, its kind, and how many distinct clients call it",
		Cypher: "MATCH (b:Broker) OPTIONAL MATCH (c)-[:CALLS]->(b) " +
			"RETURN " + name("b") + " AS broker, b.kind AS kind, count(DISTINCT c) AS clients",
		columns: []string{"broker", "kind", "clients"},
		embedded: func(g *graph.Graph, _ any) [][]any {
			var out [][]any
			for _, n := range g.Nodes {
				if !slices.Contains(n.Labels, graph.LabelBroker) {
					continue
				}
				clients := map[string]bool{}
				for _, e := range g.Edges {
					if e.Type == graph.RelCalls && e.To == n.ID {
						clients[e.From] = true
					}
				}
				out = append(out, []any{displayName(n), n.Props["kind"], int64(len(clients))})
			}
			return out
		},
	},
	{
		Name: "edges-since", Arg: "UNIXNANO", Description: "the calls first seen at or after UNIXNANO (Unix nanoseconds)",
		Cypher: "MATCH (a)-[r:CALLS]->(b) WHERE r.first_seen >= $arg RETURN " + name("a") + " AS caller, " + name("b") + " AS callee, " +
			"r.transport AS transport, " + viaOf + " AS via, r.first_seen AS first_seen",
		columns: []string{"caller", "callee", "transport", "via", "first_seen"},
		parse:   func(s string) (any, error) { return strconv.ParseInt(s, 10, 64) },
		embedded: func(g *graph.Graph, arg any) [][]any {
			since, _ := arg.(int64)
			nodes := byID(g)
			var out [][]any
			for _, e := range g.Edges {
				if first, ok := integer(e.Props["first_seen"]); e.Type == graph.RelCalls && ok && first >= since {
					out = append(out, []any{displayName(nodes[e.From]), displayName(nodes[e.To]), e.Props["transport"], via(e), first})
				}
			}
			return out
		},
	},
	{
		Name: "ended-since", Arg: "UNIXNANO", Description: "the pods deleted at or after UNIXNANO (Unix nanoseconds), kept with their calls for the graph's retention",
		Cypher: "MATCH (p:Pod) WHERE p.ended_at >= $arg " +
			"RETURN coalesce(p.namespace, '') AS namespace, coalesce(p.name, p.uid) AS pod, p.ended_at AS ended_at",
		columns: []string{"namespace", "pod", "ended_at"},
		parse:   func(s string) (any, error) { return strconv.ParseInt(s, 10, 64) },
		embedded: func(g *graph.Graph, arg any) [][]any {
			since, _ := arg.(int64)
			var out [][]any
			for _, n := range g.Nodes {
				end, ok := integer(n.Props[graph.PropEndedAt])
				if !ok || end < since || !slices.Contains(n.Labels, graph.LabelPod) {
					continue
				}
				ns, _ := n.Props["namespace"].(string)
				name, ok := n.Props["name"].(string)
				if !ok {
					name, _ = n.Props["uid"].(string)
				}
				out = append(out, []any{ns, name, end})
			}
			return out
		},
	},
	{
		Name: "top-talkers", Arg: "N", Description: "the N calls that moved the most bytes",
		Cypher: "MATCH (a)-[r:CALLS]->(b) WITH " + name("a") + " AS caller, " + name("b") + " AS callee, r.transport AS transport, " +
			viaOf + " AS via, r.bytes_sent + r.bytes_received AS bytes " +
			"RETURN bytes, caller, callee, transport, via ORDER BY bytes DESC, caller, callee, transport, via LIMIT $arg",
		columns: []string{"bytes", "caller", "callee", "transport", "via"},
		parse:   func(s string) (any, error) { return strconv.ParseInt(s, 10, 64) },
		ranked:  true,
		embedded: func(g *graph.Graph, arg any) [][]any {
			n, _ := arg.(int64)
			nodes := byID(g)
			var out [][]any
			for _, e := range g.Edges {
				if e.Type != graph.RelCalls {
					continue
				}
				s, _ := integer(e.Props["bytes_sent"])
				r, _ := integer(e.Props["bytes_received"])
				out = append(out, []any{s + r, displayName(nodes[e.From]), displayName(nodes[e.To]), e.Props["transport"], via(e)})
			}
			slices.SortFunc(out, func(a, b []any) int {
				return cmp.Or(cmp.Compare(b[0].(int64), a[0].(int64)), compareRows(a[1:], b[1:]))
			})
			return out[:min(len(out), int(max(n, 0)))]
		},
	},
}

// Find returns the query named name, or nil.
func Find(name string) *Query {
	for _, q := range All {
		if q.Name == name {
			return q
		}
	}
	return nil
}

// Parse turns the command-line arguments into the query's $arg.
func (q *Query) Parse(args []string) (any, error) {
	want := 0
	if q.Arg != "" {
		want = 1
	}
	if len(args) != want {
		return nil, fmt.Errorf("query %s takes %d argument(s) (%s), got %d", q.Name, want, q.Arg, len(args))
	}
	if want == 0 {
		return nil, nil
	}
	if q.parse == nil {
		return args[0], nil
	}
	v, err := q.parse(args[0])
	if err != nil {
		return nil, fmt.Errorf("query %s %s: %w", q.Name, q.Arg, err)
	}
	return v, nil
}

// Embedded answers q over g, the graph of the embedded store.
func (q *Query) Embedded(g *graph.Graph, arg any) *Result {
	return q.result(q.embedded(g, arg))
}

// FromRows builds q's result from the rows Neo4j returned for q.Cypher.
func (q *Query) FromRows(rows []map[string]any) *Result {
	out := make([][]any, 0, len(rows))
	for _, r := range rows {
		row := make([]any, len(q.columns))
		for i, c := range q.columns {
			row[i] = r[c]
		}
		out = append(out, row)
	}
	return q.result(out)
}

// result normalises numbers to int64 and orders the rows: as they are for
// a ranked query, else by their values.
func (q *Query) result(rows [][]any) *Result {
	for _, r := range rows {
		for i, v := range r {
			if n, ok := integer(v); ok {
				r[i] = n
			}
		}
	}
	if !q.ranked {
		slices.SortFunc(rows, compareRows)
	}
	if rows == nil {
		rows = [][]any{}
	}
	return &Result{Columns: q.columns, Rows: rows}
}

func compareRows(a, b []any) int {
	for i := range min(len(a), len(b)) {
		if c := cmp.Compare(fmt.Sprintf("%T", a[i]), fmt.Sprintf("%T", b[i])); c != 0 {
			return c
		}
		var c int
		switch x := a[i].(type) {
		case int64:
			c = cmp.Compare(x, b[i].(int64))
		default:
			c = cmp.Compare(fmt.Sprint(a[i]), fmt.Sprint(b[i]))
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

// integer reads the integer kinds the stores and JSON decoding give.
func integer(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint64:
		return int64(x), true
	case uint32:
		return int64(x), true
	case float64:
		if x == float64(int64(x)) {
			return int64(x), true
		}
	}
	return 0, false
}

func byID(g *graph.Graph) map[string]graph.GNode {
	m := make(map[string]graph.GNode, len(g.Nodes))
	for _, n := range g.Nodes {
		m[n.ID] = n
	}
	return m
}

// displayName is the Cypher nameOf: name, else exe, else address.
func displayName(n graph.GNode) string {
	for _, k := range []string{"name", "exe", "address"} {
		if s, ok := n.Props[k].(string); ok {
			return s
		}
	}
	return ""
}

// via is the Cypher viaOf: a unix call's path, else the port as text.
func via(e graph.GEdge) any {
	if e.Props["transport"] == "unix" {
		return e.Props["path"]
	}
	p, _ := integer(e.Props["port"])
	return strconv.FormatInt(p, 10)
}

// calls are the rows of callers and callees: the CALLS edges keep picks.
func calls(g *graph.Graph, keep func(from, to graph.GNode, e graph.GEdge) bool) [][]any {
	nodes := byID(g)
	var out [][]any
	for _, e := range g.Edges {
		from, to := nodes[e.From], nodes[e.To]
		if e.Type != graph.RelCalls || !keep(from, to, e) {
			continue
		}
		s, _ := integer(e.Props["bytes_sent"])
		r, _ := integer(e.Props["bytes_received"])
		n, _ := integer(e.Props["count"])
		errs, _ := integer(e.Props["errors"])
		out = append(out, []any{displayName(from), displayName(to), e.Props["transport"], via(e), n, s + r, errs})
	}
	return out
}
