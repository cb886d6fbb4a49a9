// Command cypherstatements prints every Cypher statement weft sends to
// Neo4j — migrations, the migration history and lock, the graph writer's
// templates, a sample of the Cypher export and what the Neo4j integration
// tests send — with their parameters, as
// JSON for .ci/cypherlint:
//
//	go run ./correlator/cmd/cypherstatements > statements.json
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest/testcypher"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/migrations"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cypherstatements:", err)
		os.Exit(1)
	}
}

func run() error {
	all, err := migrations.All()
	if err != nil {
		return err
	}
	var out []neo4jstore.Statement
	for _, m := range all {
		for i, s := range m.Statements {
			out = append(out, neo4jstore.Statement{Name: fmt.Sprintf("%s #%d", m.File, i+1), Cypher: s, Parameters: map[string]any{}})
		}
	}
	for _, q := range query.All {
		var arg any = "x"
		if q.Arg == "" {
			arg = nil
		} else if v, err := q.Parse([]string{"1"}); err == nil {
			arg = v
		}
		out = append(out, neo4jstore.Statement{Name: "query " + q.Name, Cypher: q.Cypher, Parameters: map[string]any{"arg": arg}})
	}
	out = append(out,
		neo4jstore.Statement{Name: "migration lock constraint", Cypher: migrations.LockConstraint, Parameters: map[string]any{}},
		neo4jstore.Statement{Name: "migration lock", Cypher: migrations.Lock, Parameters: map[string]any{"holder": "h", "ttl_seconds": 600}},
		neo4jstore.Statement{Name: "migration unlock", Cypher: migrations.Unlock, Parameters: map[string]any{"holder": "h"}},
		neo4jstore.Statement{Name: "migration history", Cypher: migrations.History, Parameters: map[string]any{}},
		neo4jstore.Statement{Name: "migration record", Cypher: migrations.Record, Parameters: map[string]any{"version": 1, "description": "d", "checksum": "c"}},
	)
	out = append(out, neo4jstore.Statements()...)
	// What the Neo4j integration tests send to prepare a database.
	out = append(out, testcypher.Statements()...)
	for i, s := range export.CypherStatements(export.Sample()) {
		out = append(out, neo4jstore.Statement{Name: fmt.Sprintf("export #%d", i+1), Cypher: s, Parameters: map[string]any{}})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
