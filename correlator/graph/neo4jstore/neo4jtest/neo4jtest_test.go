package neo4jtest_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
)

// stopper records how a helper stopped the test it was given.
type stopper struct {
	testing.TB
	skipped, failed string
}

func (s *stopper) Skip(args ...any) { s.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (s *stopper) Fatalf(f string, args ...any) {
	s.failed = fmt.Sprintf(f, args...)
	runtime.Goexit()
}

// gate runs Config in its own goroutine, as a test would, and returns how
// it stopped.
func gate(t *testing.T) *stopper {
	s := &stopper{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		neo4jtest.Config(s)
	}()
	<-done
	return s
}

// TestGate: without WEFT_NEO4J_URI every Neo4j test skips with the one
// message naming the variable; with a URI that is no Neo4j URI it fails.
func TestGate(t *testing.T) {
	t.Setenv("WEFT_NEO4J_URI", "")
	s := gate(t)
	if s.skipped != neo4jtest.SkipMessage || !strings.Contains(s.skipped, "set WEFT_NEO4J_URI (bolt://…)") {
		t.Fatalf("without WEFT_NEO4J_URI: skipped %q, failed %q", s.skipped, s.failed)
	}
	t.Setenv("WEFT_NEO4J_URI", "http://localhost:7474")
	if s := gate(t); s.skipped != "" || !strings.Contains(s.failed, `scheme "http"`) {
		t.Fatalf("with an http URI: skipped %q, failed %q", s.skipped, s.failed)
	}
}

// TestCompare: equal graphs from either store compare equal however their
// numbers are typed; a difference is named.
func TestCompare(t *testing.T) {
	g := func(count any, extra bool) *graph.Graph {
		gr := &graph.Graph{
			Nodes: []graph.GNode{{ID: "Pod:b", Labels: []string{"Pod"}, Props: map[string]any{"uid": "b"}},
				{ID: "Pod:a", Labels: []string{"Pod"}, Props: map[string]any{"uid": "a"}}},
			Edges: []graph.GEdge{{From: "Pod:a", To: "Pod:b", Type: "CALLS", Props: map[string]any{"transport": "tcp", "port": count, "count": count}}},
		}
		if extra {
			gr.Nodes = append(gr.Nodes, graph.GNode{ID: "Node:n", Labels: []string{"Node"}, Props: map[string]any{"name": "n"}})
		}
		return gr
	}
	if err := neo4jtest.Compare(g(uint64(3), false), g(int64(3), false)); err != nil {
		t.Errorf("uint64 and int64 counts: %v", err)
	}
	err := neo4jtest.Compare(g(int64(3), false), g(int64(4), true))
	for _, want := range []string{"node Node:n unexpected", `Pod:a -[CALLS tcp 3 <nil>]-> Pod:b missing`, "-[CALLS tcp 4 <nil>]-> Pod:b unexpected"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("different graphs: %v; want it to say %q", err, want)
		}
	}
}
