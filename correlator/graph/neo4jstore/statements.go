package neo4jstore

import (
	"fmt"
	"strings"

	"github.com/weftobs/weft/correlator/graph"
)

// Statement is one Cypher statement weft sends, with example parameters
// (the Cypher linter needs them declared).
type Statement struct {
	Name       string         `json:"name"`
	Cypher     string         `json:"statement"`
	Parameters map[string]any `json:"parameters"`
}

// keys of each label, as Cypher map literal matching r.<side>.<key>.
var keyProps = map[string][]string{
	graph.LabelNode:      {"name"},
	graph.LabelPod:       {"uid"},
	graph.LabelContainer: {"id"},
	graph.LabelWorkload:  {"kind", "namespace", "name"},
	graph.LabelProcess:   {"node", "exe"},
	graph.LabelExternal:  {"address"},
}

var entityLabels = []string{graph.LabelNode, graph.LabelPod, graph.LabelContainer, graph.LabelWorkload, graph.LabelProcess, graph.LabelExternal}

func pattern(v, label, from string) string {
	var parts []string
	for _, k := range keyProps[label] {
		parts = append(parts, fmt.Sprintf("%s: %s.%s", k, from, k))
	}
	return fmt.Sprintf("(%s:%s {%s})", v, label, strings.Join(parts, ", "))
}

// upsertEntity merges nodes of label and sets their other properties.
func upsertEntity(label string) string {
	return "UNWIND $rows AS r MERGE " + pattern("n", label, "r.key") + " SET n += r.props"
}

// endEntity sets ended_at on nodes of label, keeping the earliest end
// (graph.Entity.EndedAt).
func endEntity(label string) string {
	return "UNWIND $rows AS r MATCH " + pattern("n", label, "r.key") +
		" SET n.ended_at = CASE WHEN n.ended_at IS NULL OR r.ended_at < n.ended_at THEN r.ended_at ELSE n.ended_at END"
}

// endLabels are the labels that end: pods and their containers.
var endLabels = []string{graph.LabelPod, graph.LabelContainer}

// markBroker adds :Broker {kind} to nodes of label.
func markBroker(label string) string {
	return "UNWIND $rows AS r MATCH " + pattern("n", label, "r.key") + " SET n:Broker, n.kind = r.broker"
}

type linkShape struct{ Type, From, To string }

var linkShapes = []linkShape{
	{graph.RelRunsOn, graph.LabelPod, graph.LabelNode},
	{graph.RelRunsOn, graph.LabelProcess, graph.LabelNode},
	{graph.RelHasContainer, graph.LabelPod, graph.LabelContainer},
	{graph.RelOwns, graph.LabelWorkload, graph.LabelPod},
}

func mergeLink(s linkShape) string {
	return "UNWIND $rows AS r MATCH " + pattern("a", s.From, "r.from") + " MATCH " + pattern("b", s.To, "r.to") +
		" MERGE (a)-[:" + s.Type + "]->(b)"
}

// callShape is the labels at the ends of CALLS relationships and their
// key: a unix socket's path, or else (TCP) the port.
type callShape struct {
	From, To string
	Unix     bool
}

var callShapes = func() []callShape {
	tops := []string{graph.LabelPod, graph.LabelProcess, graph.LabelExternal}
	var out []callShape
	for _, unix := range []bool{false, true} {
		for _, a := range tops {
			for _, b := range tops {
				out = append(out, callShape{a, b, unix})
			}
		}
		out = append(out, callShape{graph.LabelContainer, graph.LabelContainer, unix})
	}
	return out
}()

func (s callShape) name() string {
	key := "port"
	if s.Unix {
		key = "path"
	}
	return "calls " + s.From + "->" + s.To + " by " + key
}

// addCalls adds counts to CALLS relationships between from and to nodes,
// creating them at zero. A TCP relationship is keyed by port and has no
// path; a unix one by path and has no port (DESIGN.md, "The graph").
func addCalls(s callShape) string {
	key := "port: r.port"
	if s.Unix {
		key = "path: r.path"
	}
	return "UNWIND $rows AS r MATCH " + pattern("a", s.From, "r.from") + " MATCH " + pattern("b", s.To, "r.to") +
		" MERGE (a)-[e:CALLS {transport: r.transport, " + key + "}]->(b)" +
		" ON CREATE SET e.count = 0, e.bytes_sent = 0, e.bytes_received = 0, e.errors = 0, e.first_seen = r.first_seen, e.last_seen = r.last_seen" +
		" SET e.count = e.count + r.count, e.bytes_sent = e.bytes_sent + r.bytes_sent," +
		" e.bytes_received = e.bytes_received + r.bytes_received, e.errors = e.errors + r.errors," +
		" e.first_seen = CASE WHEN r.first_seen < e.first_seen THEN r.first_seen ELSE e.first_seen END," +
		" e.last_seen = CASE WHEN r.last_seen > e.last_seen THEN r.last_seen ELSE e.last_seen END"
}

// Cursor statements: the last CALLS sequence applied, written in the same
// transaction as the batch. readCursor takes the cursor node's write lock
// before it reads (setting a property does; Neo4j reads at read-committed
// isolation and locks only what is written), so the check that skips an
// applied batch and the write after it cannot interleave with another
// writer's.
const (
	readCursor  = "MERGE (s:WeftStream {name: $stream}) ON CREATE SET s.last_seq = 0 SET s._lock = true REMOVE s._lock RETURN s.last_seq AS last_seq"
	writeCursor = "MATCH (s:WeftStream {name: $stream}) SET s.last_seq = $seq"
	peekCursor  = "OPTIONAL MATCH (s:WeftStream {name: $stream}) RETURN coalesce(s.last_seq, 0) AS last_seq"
)

// isGraph is a WHERE condition true for nodes of the graph's labels.
func isGraph(v string) string {
	var parts []string
	for _, l := range entityLabels {
		parts = append(parts, v+":"+l)
	}
	return strings.Join(parts, " OR ")
}

// Statements that read the graph: countGraph counts its nodes and stream
// cursors (what makes a database not empty), readNodes and readRels return
// it whole.
var (
	countGraph = "MATCH (n) WHERE " + isGraph("n") + " OR n:WeftStream RETURN count(n) AS n"
	readNodes  = "MATCH (n) WHERE " + isGraph("n") + " RETURN labels(n) AS labels, properties(n) AS props"
	readRels   = "MATCH (a)-[r:" + strings.Join([]string{graph.RelRunsOn, graph.RelHasContainer, graph.RelOwns, graph.RelCalls}, "|") + "]->(b)" +
		" WHERE (" + isGraph("a") + ") AND (" + isGraph("b") + ")" +
		" RETURN labels(a) AS from_labels, properties(a) AS from_props, type(r) AS type, properties(r) AS props," +
		" labels(b) AS to_labels, properties(b) AS to_props"
)

func refKey(r graph.Ref) map[string]any { return r.Key() }

// Statements lists every statement the store sends, with example
// parameters, for the Cypher linter.
func Statements() []Statement {
	key := func(label string) map[string]any {
		m := map[string]any{}
		for _, k := range keyProps[label] {
			m[k] = "x"
		}
		return m
	}
	var out []Statement
	for _, l := range entityLabels {
		out = append(out, Statement{Name: "upsert " + l, Cypher: upsertEntity(l),
			Parameters: map[string]any{"rows": []any{map[string]any{"key": key(l), "props": map[string]any{"name": "x"}}}}})
		out = append(out, Statement{Name: "broker " + l, Cypher: markBroker(l),
			Parameters: map[string]any{"rows": []any{map[string]any{"key": key(l), "broker": "nats"}}}})
	}
	for _, l := range endLabels {
		out = append(out, Statement{Name: "end " + l, Cypher: endEntity(l),
			Parameters: map[string]any{"rows": []any{map[string]any{"key": key(l), "ended_at": 1}}}})
	}
	for _, s := range linkShapes {
		out = append(out, Statement{Name: "link " + s.Type + " " + s.From + "->" + s.To, Cypher: mergeLink(s),
			Parameters: map[string]any{"rows": []any{map[string]any{"from": key(s.From), "to": key(s.To)}}}})
	}
	for _, s := range callShapes {
		row := map[string]any{"from": key(s.From), "to": key(s.To), "transport": "tcp", "port": 4222,
			"count": 1, "bytes_sent": 1, "bytes_received": 1, "errors": 0, "first_seen": 1, "last_seen": 2}
		if s.Unix {
			delete(row, "port")
			row["transport"], row["path"] = "unix", "/run/x.sock"
		}
		out = append(out, Statement{Name: s.name(), Cypher: addCalls(s), Parameters: map[string]any{"rows": []any{row}}})
	}
	out = append(out,
		Statement{Name: "read cursor", Cypher: readCursor, Parameters: map[string]any{"stream": "CALLS"}},
		Statement{Name: "write cursor", Cypher: writeCursor, Parameters: map[string]any{"stream": "CALLS", "seq": 1}},
		Statement{Name: "peek cursor", Cypher: peekCursor, Parameters: map[string]any{"stream": "CALLS"}},
		Statement{Name: "count graph", Cypher: countGraph, Parameters: map[string]any{}},
		Statement{Name: "read nodes", Cypher: readNodes, Parameters: map[string]any{}},
		Statement{Name: "read relationships", Cypher: readRels, Parameters: map[string]any{}},
	)
	return out
}
