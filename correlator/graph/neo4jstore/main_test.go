package neo4jstore_test

import (
	"os"
	"testing"

	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
)

// TestMain stops the package's Neo4j (see package neo4jtest) after the
// tests.
func TestMain(m *testing.M) { os.Exit(neo4jtest.RunTests(m)) }
