// Package correlator holds weft's fold from kernel events to calls and from
// calls to a graph, and the stage kinds that run them:
//
//   - podindex: what a node said about pods, as of any time (IP history).
//   - join: the client/server join of connection events into calls.
//   - correlate: the "correlator" stage kind (EVENTS → CALLS).
//   - graph: the graph model, the fold of calls into graph changes, and
//     the Store interface; graph/memstore (embedded) and graph/neo4jstore
//     implement it; graph/export renders a graph as JSON, Cypher or DOT.
//   - graphstage: the "graph" stage kind (CALLS → a Store).
//
// It imports streams/ and never another stage kind; only graph/neo4jstore
// imports the Neo4j driver.
package correlator
