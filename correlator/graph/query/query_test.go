package query_test

import (
	"os"
	"strings"
	"testing"

	"github.com/weftobs/weft/correlator/graph/query"
)

// TestREADMEGivesEachCypher: the README gives every named query's Cypher
// as weft runs it, for Neo4j Browser.
func TestREADMEGivesEachCypher(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range query.All {
		if !strings.Contains(string(readme), "weft graph query "+q.Name) || !strings.Contains(string(readme), "\n"+q.Cypher+"\n") {
			t.Errorf("README.md does not give query %s and its Cypher:\n%s", q.Name, q.Cypher)
		}
	}
}

// TestParse: a query takes exactly its argument, typed.
func TestParse(t *testing.T) {
	for _, c := range []struct {
		query string
		args  []string
		want  any
		err   string
	}{
		{"callers", []string{"nats-0"}, "nats-0", ""},
		{"callers", nil, nil, "takes 1 argument"},
		{"brokers", nil, nil, ""},
		{"brokers", []string{"x"}, nil, "takes 0 argument"},
		{"top-talkers", []string{"3"}, int64(3), ""},
		{"edges-since", []string{"yesterday"}, nil, "UNIXNANO"},
	} {
		got, err := query.Find(c.query).Parse(c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %v: %v, want an error saying %q", c.query, c.args, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s %v: %v (%T), %v; want %v", c.query, c.args, got, got, err, c.want)
		}
	}
	if query.Find("nope") != nil {
		t.Error("Find of an unknown name")
	}
}
