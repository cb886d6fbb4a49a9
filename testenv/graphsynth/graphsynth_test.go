package graphsynth_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/testenv/graphsynth"
)

// TestBig: the big graph is the size it says, in the store as in the
// batch, and the same for the same seed.
func TestBig(t *testing.T) {
	b := graphsynth.Batch(graphsynth.Big, 1, 1e18)
	st := memstore.New()
	if err := st.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	g, err := st.Graph(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	calls, unix, brokers := 0, 0, 0
	for _, e := range g.Edges {
		if e.Type == graph.RelCalls {
			calls++
			if e.Props["transport"] == "unix" {
				unix++
			}
		}
	}
	for _, n := range g.Nodes {
		if len(n.Labels) > 1 && n.Labels[1] == graph.LabelBroker {
			brokers++
		}
	}
	if len(g.Nodes) != 5000 || graphsynth.Big.Nodes() != 5000 || calls != 20000 || unix != graphsynth.Big.SidecarPods {
		t.Errorf("%d nodes (Nodes() %d), %d calls (%d unix); want 5000, 20000 (%d unix)",
			len(g.Nodes), graphsynth.Big.Nodes(), calls, unix, graphsynth.Big.SidecarPods)
	}
	if want := 4 * graphsynth.Big.Pods / graphsynth.Big.Workloads; brokers < want {
		t.Errorf("%d broker pods, want at least %d", brokers, want)
	}
	if !reflect.DeepEqual(b, graphsynth.Batch(graphsynth.Big, 1, 1e18)) {
		t.Error("two batches of one seed differ")
	}
}
