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

// Retention (graph.Batch.Bucket, graph.Retainer): every node and link
// keeps in _bucket the last retention bucket that named it, an ended node
// in _ended_bucket the last that gave its end, and each CALLS
// relationship has a WEFT_CALLS_BUCKET twin per bucket with that
// bucket's counts, which the CALLS counts are the sum of. Properties
// starting with _ are weft's own: /api/v1/graph leaves them out.
const relCallsBucket = "WEFT_CALLS_BUCKET"

// laterBucket is the Cypher that sets v._bucket to $bucket unless it holds
// a later one.
func laterBucket(v string) string {
	return v + "._bucket = CASE WHEN " + v + "._bucket IS NULL OR " + v + "._bucket < $bucket THEN $bucket ELSE " + v + "._bucket END"
}

// upsertEntity merges nodes of label and sets their other properties.
func upsertEntity(label string) string {
	return "UNWIND $rows AS r MERGE " + pattern("n", label, "r.key") + " SET n += r.props, " + laterBucket("n")
}

// endEntity sets ended_at on nodes of label, keeping the earliest end
// (graph.Entity.EndedAt), and the last bucket that gave it.
func endEntity(label string) string {
	return "UNWIND $rows AS r MATCH " + pattern("n", label, "r.key") +
		" WITH n, r, n.ended_at AS prev, n._ended_bucket AS prev_bucket" +
		" SET n.ended_at = CASE WHEN prev IS NULL OR r.ended_at < prev THEN r.ended_at ELSE prev END," +
		" n._ended_bucket = CASE WHEN prev IS NULL OR r.ended_at < prev THEN $bucket" +
		" WHEN r.ended_at = prev AND (prev_bucket IS NULL OR prev_bucket < $bucket) THEN $bucket ELSE prev_bucket END"
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
		" MERGE (a)-[l:" + s.Type + "]->(b) SET " + laterBucket("l")
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
// Bucketed, it adds them to the relationship's WEFT_CALLS_BUCKET twin of
// $bucket too.
func addCalls(s callShape, bucketed bool) string {
	key := "port: r.port"
	if s.Unix {
		key = "path: r.path"
	}
	add := func(v string) string {
		return " ON CREATE SET " + v + ".count = 0, " + v + ".bytes_sent = 0, " + v + ".bytes_received = 0, " + v + ".errors = 0, " +
			v + ".first_seen = r.first_seen, " + v + ".last_seen = r.last_seen" +
			" SET " + v + ".count = " + v + ".count + r.count, " + v + ".bytes_sent = " + v + ".bytes_sent + r.bytes_sent," +
			" " + v + ".bytes_received = " + v + ".bytes_received + r.bytes_received, " + v + ".errors = " + v + ".errors + r.errors," +
			" " + v + ".first_seen = CASE WHEN r.first_seen < " + v + ".first_seen THEN r.first_seen ELSE " + v + ".first_seen END," +
			" " + v + ".last_seen = CASE WHEN r.last_seen > " + v + ".last_seen THEN r.last_seen ELSE " + v + ".last_seen END"
	}
	out := "UNWIND $rows AS r MATCH " + pattern("a", s.From, "r.from") + " MATCH " + pattern("b", s.To, "r.to") +
		" MERGE (a)-[e:CALLS {transport: r.transport, " + key + "}]->(b)" + add("e")
	if bucketed {
		out += " WITH a, b, r MERGE (a)-[x:" + relCallsBucket + " {transport: r.transport, " + key + ", bucket: $bucket}]->(b)" + add("x")
	}
	return out
}

// Retention statements (Store.Retain), in the order they run, each with
// $cut: the CALLS relationships that lose a bucket are marked and the
// bucket deleted, then their counts summed again from the buckets left
// (and those left with none deleted); links, ends and nodes no later
// bucket named are removed. Bucket 0, written with no retention, is kept.
var retainStatements = []Statement{
	{Name: "retain: drop call buckets", Cypher: "MATCH (a)-[x:" + relCallsBucket + "]->(b) WHERE x.bucket < $cut AND x.bucket <> 0" +
		" MATCH (a)-[e:CALLS {transport: x.transport}]->(b) WHERE coalesce(e.port, -1) = coalesce(x.port, -1) AND coalesce(e.path, '') = coalesce(x.path, '')" +
		" SET e._recount = true DELETE x"},
	{Name: "retain: recount calls", Cypher: "MATCH (a)-[e:CALLS]->(b) WHERE e._recount = true" +
		" OPTIONAL MATCH (a)-[k:" + relCallsBucket + " {transport: e.transport}]->(b) WHERE coalesce(k.port, -1) = coalesce(e.port, -1) AND coalesce(k.path, '') = coalesce(e.path, '')" +
		" WITH e, collect(k) AS ks REMOVE e._recount" +
		" SET e.count = reduce(n = 0, k IN ks | n + k.count), e.bytes_sent = reduce(n = 0, k IN ks | n + k.bytes_sent)," +
		" e.bytes_received = reduce(n = 0, k IN ks | n + k.bytes_received), e.errors = reduce(n = 0, k IN ks | n + k.errors)," +
		" e.first_seen = reduce(m = null, k IN ks | CASE WHEN m IS NULL OR k.first_seen < m THEN k.first_seen ELSE m END)," +
		" e.last_seen = reduce(m = null, k IN ks | CASE WHEN m IS NULL OR k.last_seen > m THEN k.last_seen ELSE m END)" +
		" WITH e, ks WHERE size(ks) = 0 DELETE e"},
	{Name: "retain: drop links", Cypher: "MATCH ()-[l:" + graph.RelRunsOn + "|" + graph.RelHasContainer + "|" + graph.RelOwns + "]->()" +
		" WHERE l._bucket < $cut AND l._bucket <> 0 DELETE l"},
	{Name: "retain: drop ends", Cypher: "MATCH (n) WHERE (n:" + graph.LabelPod + " OR n:" + graph.LabelContainer + ")" +
		" AND n._ended_bucket < $cut AND n._ended_bucket <> 0 REMOVE n.ended_at, n._ended_bucket"},
	{Name: "retain: drop nodes", Cypher: "MATCH (n) WHERE (" + isGraph("n") + ") AND n._bucket < $cut AND n._bucket <> 0 DETACH DELETE n"},
}

// Cursor statements for retention: the cut recorded next to the stream's
// sequence.
const (
	readRetained  = "OPTIONAL MATCH (s:WeftStream {name: $stream}) RETURN coalesce(s.retained_from, 0) AS retained_from"
	writeRetained = "MERGE (s:WeftStream {name: $stream}) ON CREATE SET s.last_seq = 0 SET s.retained_from = $cut"
)

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
			Parameters: map[string]any{"bucket": 0, "rows": []any{map[string]any{"key": key(l), "props": map[string]any{"name": "x"}}}}})
		out = append(out, Statement{Name: "broker " + l, Cypher: markBroker(l),
			Parameters: map[string]any{"rows": []any{map[string]any{"key": key(l), "broker": "nats"}}}})
	}
	for _, l := range endLabels {
		out = append(out, Statement{Name: "end " + l, Cypher: endEntity(l),
			Parameters: map[string]any{"bucket": 0, "rows": []any{map[string]any{"key": key(l), "ended_at": 1}}}})
	}
	for _, s := range linkShapes {
		out = append(out, Statement{Name: "link " + s.Type + " " + s.From + "->" + s.To, Cypher: mergeLink(s),
			Parameters: map[string]any{"bucket": 0, "rows": []any{map[string]any{"from": key(s.From), "to": key(s.To)}}}})
	}
	for _, s := range callShapes {
		row := map[string]any{"from": key(s.From), "to": key(s.To), "transport": "tcp", "port": 4222,
			"count": 1, "bytes_sent": 1, "bytes_received": 1, "errors": 0, "first_seen": 1, "last_seen": 2}
		if s.Unix {
			delete(row, "port")
			row["transport"], row["path"] = "unix", "/run/x.sock"
		}
		out = append(out, Statement{Name: s.name(), Cypher: addCalls(s, false), Parameters: map[string]any{"rows": []any{row}}})
		out = append(out, Statement{Name: s.name() + " bucketed", Cypher: addCalls(s, true), Parameters: map[string]any{"bucket": 1, "rows": []any{row}}})
	}
	for _, st := range retainStatements {
		st.Parameters = map[string]any{"cut": 1}
		out = append(out, st)
	}
	out = append(out,
		Statement{Name: "read cursor", Cypher: readCursor, Parameters: map[string]any{"stream": "CALLS"}},
		Statement{Name: "write cursor", Cypher: writeCursor, Parameters: map[string]any{"stream": "CALLS", "seq": 1}},
		Statement{Name: "peek cursor", Cypher: peekCursor, Parameters: map[string]any{"stream": "CALLS"}},
		Statement{Name: "read retained", Cypher: readRetained, Parameters: map[string]any{"stream": "CALLS"}},
		Statement{Name: "write retained", Cypher: writeRetained, Parameters: map[string]any{"stream": "CALLS", "cut": 1}},
		Statement{Name: "count graph", Cypher: countGraph, Parameters: map[string]any{}},
		Statement{Name: "read nodes", Cypher: readNodes, Parameters: map[string]any{}},
		Statement{Name: "read relationships", Cypher: readRels, Parameters: map[string]any{}},
	)
	return out
}
