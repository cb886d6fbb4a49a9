package neo4jtest_test

import (
	"errors"
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

// stopped runs f in its own goroutine, as a test would run a helper, and
// returns how it stopped s.
func stopped(t *testing.T, f func(s *stopper)) *stopper {
	s := &stopper{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(s)
	}()
	<-done
	return s
}

// TestGate: when no Neo4j can be had, a Neo4j test skips with the one
// message naming WEFT_NEO4J_URI and the reason, except in CI, where it
// fails; with a URI that is no Neo4j URI it fails.
func TestGate(t *testing.T) {
	reason := errors.New("find java (17 or later) to run neo4j: not found")
	t.Setenv("CI", "")
	s := stopped(t, func(s *stopper) { neo4jtest.Unavailable(s, reason) })
	if s.failed != "" || !strings.HasPrefix(s.skipped, neo4jtest.SkipMessage) || !strings.Contains(s.skipped, "WEFT_NEO4J_URI (bolt://…)") ||
		!strings.HasSuffix(s.skipped, reason.Error()) {
		t.Fatalf("outside CI: skipped %q, failed %q", s.skipped, s.failed)
	}
	t.Setenv("CI", "true")
	s = stopped(t, func(s *stopper) { neo4jtest.Unavailable(s, reason) })
	if s.skipped != "" || !strings.Contains(s.failed, "every Neo4j test must run in CI") || !strings.Contains(s.failed, reason.Error()) {
		t.Fatalf("in CI: skipped %q, failed %q", s.skipped, s.failed)
	}
	t.Setenv("WEFT_NEO4J_URI", "http://localhost:7474")
	if s := stopped(t, func(s *stopper) { neo4jtest.Config(s) }); s.skipped != "" || !strings.Contains(s.failed, `scheme "http"`) {
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
