package graphstage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/correlate"
	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

func graphSettings(dir string, replay *stage.Replay) stage.Settings {
	cfg := graphstage.NewConfig()
	cfg.FlushInterval = 20 * time.Millisecond
	return stage.Settings{Name: "graph", Kind: "graph", Node: "ctl", DataDir: dir, Replay: replay,
		Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: cfg, Counters: &stage.Counters{}}
}

func startGraph(t testing.TB, h *stagetest.Host, set stage.Settings) *graphstage.Stage {
	t.Helper()
	st, err := graphstage.New(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return st.(*graphstage.Stage)
}

// waitCalls waits until g has folded at least n calls.
func waitCalls(t *testing.T, g *graphstage.Stage, n uint64) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := g.Stats().Calls; got < n {
			return fmt.Errorf("%d calls so far, waiting for %d", got, n)
		}
		return nil
	})
}

func startCorrelator(t *testing.T, h *stagetest.Host) stage.Stage {
	cfg := correlate.NewConfig()
	cfg.Window, cfg.CloseWait, cfg.AckWait, cfg.FlushInterval = 200*time.Millisecond, 300*time.Millisecond, time.Second, 20*time.Millisecond
	st, err := correlate.New(stage.Settings{Name: "correlator", Node: "ctl", Config: cfg, Counters: &stage.Counters{},
		Inputs: []stage.Stream{{Name: schema.StreamEvents}}, Outputs: []stage.Stream{{Name: schema.StreamCalls}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return st
}

func fetch(t *testing.T, h *stagetest.Host) *graph.Graph {
	t.Helper()
	rec := h.Get("/api/v1/graph")
	if rec.Code != 200 {
		t.Fatalf("GET /api/v1/graph: %d %s", rec.Code, rec.Body)
	}
	var g graph.Graph
	if err := json.Unmarshal(rec.Body.Bytes(), &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// podEdges reads the pod-level CALLS edges of g as scenario totals.
func podEdges(g *graph.Graph) map[scenario.Key]*scenario.Totals {
	out := map[scenario.Key]*scenario.Totals{}
	id := func(s string) string {
		switch {
		case len(s) > 4 && s[:4] == "Pod:":
			return s[4:]
		case len(s) > 9 && s[:9] == "External:":
			return "ext:" + s[9:]
		}
		return s
	}
	for _, e := range g.Edges {
		if e.Type != graph.RelCalls || (e.From[:4] == "Cont") {
			continue
		}
		num := func(k string) uint64 { f, _ := e.Props[k].(float64); return uint64(f) }
		k := scenario.Key{From: id(e.From), To: id(e.To), Transport: schema.Transport_TRANSPORT_TCP, Port: uint32(num("port"))}
		if e.Props["transport"] == "unix" {
			k.Transport, k.Port, k.Path = schema.Transport_TRANSPORT_UNIX, 0, e.Props["path"].(string)
		}
		out[k] = &scenario.Totals{Count: num("count"), Sent: num("bytes_sent"), Received: num("bytes_received"), Errors: num("errors")}
	}
	return out
}

// TestEndToEnd: events → correlator → CALLS → graph stage → /api/v1/graph
// equals the ground truth, brokers are labelled, both stages are killed
// mid-stream and restarted, a restart comes back with the same graph, and
// a replay into an empty store rebuilds the same graph.
func TestEndToEnd(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 200, 3e6)
	batches := sim.Interleaved(8)
	half := len(batches) / 2
	stagetest.PublishEvents(t, s.JS, batches[:half])

	dir := t.TempDir()
	nc1, js1 := stagetest.Connect(t, s)
	h1 := stagetest.NewHost(js1)
	cor1 := startCorrelator(t, h1)
	g1 := startGraph(t, h1, graphSettings(dir, nil))
	waitCalls(t, g1, 100)
	// Kill both: the connection is cut, nothing is drained.
	nc1.Close()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = cor1.Shutdown(dead)
	_ = g1.Shutdown(dead)

	stagetest.PublishEvents(t, s.JS, batches[half:])
	_, js2 := stagetest.Connect(t, s)
	h2 := stagetest.NewHost(js2)
	cor2 := startCorrelator(t, h2)
	defer cor2.Shutdown(context.Background())
	g2 := startGraph(t, h2, graphSettings(dir, nil))
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(fetch(t, h2)))
	})
	live := fetch(t, h2)
	t.Logf("graph: %d nodes, %d edges; stage %+v", len(live.Nodes), len(live.Edges), g2.Stats())
	// The named queries over HTTP are the embedded answers over the graph.
	for path, want := range map[string]*query.Result{
		"/api/v1/query/brokers":                 query.Find("brokers").Embedded(live, nil),
		"/api/v1/query/blast-radius?arg=node-a": query.Find("blast-radius").Embedded(live, "node-a"),
	} {
		rec := h2.Get(path)
		w, _ := json.Marshal(want)
		if rec.Code != 200 || len(want.Rows) == 0 || strings.TrimSpace(rec.Body.String()) != string(w) {
			t.Errorf("GET %s: %d %s, want %s", path, rec.Code, rec.Body, w)
		}
	}
	if rec := h2.Get("/api/v1/query/nope"); rec.Code != 404 {
		t.Errorf("GET an unknown query: %d, want 404", rec.Code)
	}
	brokers := map[string]string{}
	for _, n := range live.Nodes {
		if len(n.Labels) > 1 && n.Labels[1] == graph.LabelBroker {
			brokers[n.ID] = n.Props["kind"].(string)
		}
	}
	for id, kind := range map[string]string{"Pod:uid-nats": "nats", "Pod:uid-redis": "redis", "Container:c-signer": "crypto-broker"} {
		if brokers[id] != kind {
			t.Errorf("%s: broker kind %q, want %q (brokers: %v)", id, brokers[id], kind, brokers)
		}
	}
	if err := g2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Restart: the snapshot plus the tail give the same graph.
	h3 := stagetest.NewHost(s.JS)
	g3 := startGraph(t, h3, graphSettings(dir, nil))
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := fetch(t, h3); !reflect.DeepEqual(got, live) {
			return fmt.Errorf("restarted graph differs: %d nodes %d edges, want %d %d", len(got.Nodes), len(got.Edges), len(live.Nodes), len(live.Edges))
		}
		return nil
	})
	_ = g3.Shutdown(context.Background())

	// Replay from seq 1 into an empty store.
	replayEquals(t, s, "replay-test", live)
}

// replayEquals replays CALLS from its first message into a new graph stage
// (embedded store, durable consumer durable) and waits until its graph is
// live.
func replayEquals(t *testing.T, s *natstest.Server, durable string, live *graph.Graph) {
	t.Helper()
	h := stagetest.NewHost(s.JS)
	g := startGraph(t, h, graphSettings(t.TempDir(), &stage.Replay{Durable: durable, StartSeq: 1}))
	defer g.Shutdown(context.Background())
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := fetch(t, h); !reflect.DeepEqual(got, live) {
			return fmt.Errorf("replayed graph differs: %d nodes %d edges, want %d %d", len(got.Nodes), len(got.Edges), len(live.Nodes), len(live.Edges))
		}
		return nil
	})
}

// TestTwoStagesOneProcess: two graph stages in one process both start;
// the first started serves its graph (and the page), the second does not
// take it over.
func TestTwoStagesOneProcess(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	h := stagetest.NewHost(s.JS)
	first := startGraph(t, h, graphSettings(t.TempDir(), nil))
	defer first.Shutdown(context.Background())
	set := graphSettings(t.TempDir(), nil)
	set.Name = "graph2"
	second := startGraph(t, h, set)
	defer second.Shutdown(context.Background())
	if g := fetch(t, h); len(g.Nodes) != 0 {
		t.Errorf("an empty CALLS gives a graph of %d nodes", len(g.Nodes))
	}
	if rec := h.Get("/"); rec.Code != 200 {
		t.Errorf("GET /: %d", rec.Code)
	}
	if len(h.Errors) != 0 {
		t.Errorf("fatal errors: %v", h.Errors)
	}
}
