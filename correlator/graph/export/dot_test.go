package export

import (
	"strings"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
)

// TestDOTLabels: a node's label is its labels and name on two lines (DOT's
// \n, not a backslash and an n), and quotes in names are escaped.
func TestDOTLabels(t *testing.T) {
	g := &graph.Graph{
		Nodes: []graph.GNode{
			{ID: "Pod:u1", Labels: []string{"Pod", "Broker"}, Props: map[string]any{"name": `my"pod`}},
			{ID: `Process:vm/C:\bin`, Labels: []string{"Process"}, Props: map[string]any{}},
		},
		Edges: []graph.GEdge{{From: "Pod:u1", To: `Process:vm/C:\bin`, Type: "CALLS", Props: map[string]any{"count": 3}}},
	}
	var b strings.Builder
	if err := Write(&b, g, "dot"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`"Pod:u1" [label="Pod:Broker\nmy\"pod"];`,
		`"Process:vm/C:\\bin" [label="Process\nvm/C:\\bin"];`,
		`"Pod:u1" -> "Process:vm/C:\\bin" [label="CALLS ×3"];`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("DOT lacks %s:\n%s", want, out)
		}
	}
}
