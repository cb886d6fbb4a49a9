// Package testcypher holds the Cypher the Neo4j integration tests send
// to prepare a database, apart from the test helpers (package neo4jtest),
// so the linter's statement list (correlator/cmd/cypherstatements) can
// include it without importing test code.
package testcypher

import (
	"fmt"
	"strings"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
)

// Statements the helpers send (linted with the store's: see Statements).
const (
	WipeAll         = "MATCH (n) DETACH DELETE n"
	ShowConstraints = "SHOW CONSTRAINTS YIELD name WHERE name STARTS WITH 'weft_' RETURN name"
	ShowIndexes     = "SHOW INDEXES YIELD name WHERE name STARTS WITH 'weft_' RETURN name"
	Mark            = "CREATE (:WeftTestMarker {note: $note, at: datetime()})"
	// SetPassword changes the logged-in user's password (on database
	// system): an operator fixing a password mismatch from Neo4j's side.
	SetPassword = "ALTER CURRENT USER SET PASSWORD FROM $old TO $new"
	// Drop statements take a name (checked by the caller to be weft_…).
	DropConstraint = "DROP CONSTRAINT %s IF EXISTS"
	DropIndex      = "DROP INDEX %s IF EXISTS"
)

// Census counts the database's nodes, the test marker, and the nodes of no
// label weft writes.
var Census = "MATCH (n) RETURN count(n) AS total, count(CASE WHEN n:WeftTestMarker THEN 1 END) AS marked, " +
	"count(CASE WHEN NOT (" + strings.Join(weftLabels("n"), " OR ") + ") THEN 1 END) AS foreign"

func weftLabels(v string) []string {
	var out []string
	for _, l := range []string{graph.LabelNode, graph.LabelPod, graph.LabelContainer, graph.LabelWorkload, graph.LabelProcess,
		graph.LabelExternal, "WeftStream", "WeftMigration", "WeftMigrationLock", "WeftTestMarker"} {
		out = append(out, v+":"+l)
	}
	return out
}

// Statements lists the statements the helpers send, with example
// parameters, in the shape of neo4jstore.Statements, for the Cypher linter.
func Statements() []neo4jstore.Statement {
	none := map[string]any{}
	return []neo4jstore.Statement{
		{Name: "test Census", Cypher: Census, Parameters: none},
		{Name: "test wipe", Cypher: WipeAll, Parameters: none},
		{Name: "test show constraints", Cypher: ShowConstraints, Parameters: none},
		{Name: "test show indexes", Cypher: ShowIndexes, Parameters: none},
		{Name: "test drop constraint", Cypher: fmt.Sprintf(DropConstraint, "weft_pod_uid"), Parameters: none},
		{Name: "test drop index", Cypher: fmt.Sprintf(DropIndex, "weft_pod_name"), Parameters: none},
		{Name: "test marker", Cypher: Mark, Parameters: map[string]any{"note": "x"}},
		{Name: "test set password", Cypher: SetPassword, Parameters: map[string]any{"old": "x", "new": "y"}},
	}
}
