package graphstage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestPodEnded: a pod deleted (its PodEvent on EVENTS) is ended in the
// graph: the correlator carries the delete to CALLS, the graph stage sets
// ended_at on the pod and its containers and keeps its calls, so the
// ground truth still holds and the ended-since query finds it. A pod that
// never called anything is in the graph, ended, with its name; pods that
// run on have no ended_at. A replay of CALLS alone (EVENTS not read) gives
// the same graph.
func TestPodEnded(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	idle := &schema.Pod{Uid: "uid-job", Name: "report-29001", Namespace: "batch", Node: "node-b", Ips: []string{"10.0.2.9"},
		Workload:   &schema.OwnerRef{Kind: "CronJob", Name: "report", Uid: "own-report", Controller: true},
		Containers: []*schema.Container{{Id: "c-report", Name: "report", Image: "example/report:1"}}}
	sim.PodUp(scenario.T0, idle)
	const rounds = 40
	c.Traffic(sim, rounds, 3e6)
	appEnd := scenario.T0 + rounds*3e6 + 50e6
	sim.PodDown(appEnd, c.App)
	sim.PodDown(scenario.T0+1e9, idle)
	sim.PodDown(scenario.T0+2e9, idle) // a second delete of an ended pod changes nothing
	stagetest.PublishEvents(t, s.JS, sim.Interleaved(8))

	h, g, live := correlateAndFold(t, s, sim, func(g *graphstage.Stage, _ *graph.Graph) error {
		if g.Stats().PodsEnded < 2 {
			return fmt.Errorf("%d ended pods folded, want 2", g.Stats().PodsEnded)
		}
		return nil
	})
	if n := g.Stats().PodsEnded; n != 2 {
		t.Errorf("%d ended pods folded, want 2 (one per pod deleted)", n)
	}
	ended := endedNodes(t, h)
	want := map[string]int64{
		"Pod:uid-app": int64(appEnd), "Container:c-app": int64(appEnd),
		"Pod:uid-job": int64(scenario.T0 + 1e9), "Container:c-report": int64(scenario.T0 + 1e9),
	}
	if !reflect.DeepEqual(ended, want) {
		t.Errorf("ended nodes %v, want %v", ended, want)
	}
	for _, n := range live.Nodes {
		if n.ID == "Pod:uid-job" && n.Props["name"] != "report-29001" {
			t.Errorf("the idle ended pod: %v, want its name", n.Props)
		}
	}
	for _, e := range live.Edges {
		if e.From == "Workload:CronJob/batch/report" && e.To == "Pod:uid-job" && e.Type == graph.RelOwns {
			want["owns"] = 1
		}
	}
	if want["owns"] != 1 {
		t.Error("the idle ended pod has no OWNS from its CronJob")
	}
	rec := h.Get(fmt.Sprintf("/api/v1/query/ended-since?arg=%d", scenario.T0))
	if wantBody := fmt.Sprintf(`{"columns":["namespace","pod","ended_at"],"rows":[["batch","report-29001",%d],["shop","app-7d9f-x2x4z",%d]]}`,
		scenario.T0+1e9, appEnd); rec.Code != 200 || rec.Body.String() != wantBody+"\n" {
		t.Errorf("ended-since: %d %s, want %s", rec.Code, rec.Body, wantBody)
	}
	if rec := h.Get(fmt.Sprintf("/api/v1/query/ended-since?arg=%d", scenario.T0+1e9+1)); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"rows":[]`) {
		t.Errorf("ended-since after the last end: %d %s, want no rows", rec.Code, rec.Body)
	}

	// CALLS alone rebuilds it: EVENTS is not read by a graph replay.
	replayEquals(t, s, "replay-ended", live)
}

// endedNodes are the nodes of h's /api/v1/graph that carry ended_at, with
// it read exactly (a float64 would round nanoseconds past 2^53).
func endedNodes(t *testing.T, h *stagetest.Host) map[string]int64 {
	t.Helper()
	dec := json.NewDecoder(h.Get("/api/v1/graph").Body)
	dec.UseNumber()
	var g graph.Graph
	if err := dec.Decode(&g); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, n := range g.Nodes {
		if v, ok := n.Props[graph.PropEndedAt].(json.Number); ok {
			i, err := v.Int64()
			if err != nil {
				t.Fatalf("%s: ended_at %v: %v", n.ID, v, err)
			}
			out[n.ID] = i
		}
	}
	return out
}

// TestPodChanged: a client pod announced before the kubelet reported its
// container (no name, no image), which calls once and makes no call after
// its container is named, is named in the graph all the same: the
// correlator carries the pod's second announcement to CALLS and the graph
// stage folds it. An announcement that repeats the last says nothing new
// and is not carried. A replay of CALLS alone gives the same graph.
func TestPodChanged(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	early := &schema.Pod{Uid: "uid-report", Name: "report-29002", Namespace: "batch", Node: "node-a", Ips: []string{"10.0.1.20"},
		Workload: &schema.OwnerRef{Kind: "CronJob", Name: "report", Uid: "own-report", Controller: true}}
	named := proto.Clone(early).(*schema.Pod)
	named.Containers = []*schema.Container{{Id: "c-report", Name: "report", Image: "example/report:2"}}
	sim.PodUp(scenario.T0, early)
	client := scenario.Proc{Node: "node-a", Pod: early, Container: &schema.Container{Id: "c-report"}, Pid: 500, Exe: "/bin/report"}
	sim.TCP(scenario.Conn{Client: client, Server: c.BrokerProc,
		ClientAddr: netip.MustParseAddrPort("10.0.1.20:41000"), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
		Dialed: netip.AddrPortFrom(c.VIP, 4222), Start: scenario.T0 + 2e6, Dur: 1e6, Sent: 10, Received: 20})
	sim.PodUp(scenario.T0+1e9, named)
	sim.PodUp(scenario.T0+2e9, proto.Clone(named).(*schema.Pod)) // the same again: nothing new
	c.Traffic(sim, 5, 3e6)
	stagetest.PublishPartitioned(t, s.JS, sim.Interleaved(8), 1) // pod events on .pod, as a collector publishes them

	_, g, live := correlateAndFold(t, s, sim, func(_ *graphstage.Stage, live *graph.Graph) error {
		for _, n := range live.Nodes {
			if n.ID == "Container:c-report" {
				if n.Props["name"] != "report" || n.Props["image"] != "example/report:2" {
					return fmt.Errorf("the client's container: %v, want name report, image example/report:2", n.Props)
				}
				return nil
			}
		}
		return fmt.Errorf("no Container:c-report in the graph")
	})
	if n := g.Stats().PodsChanged; n != 1 {
		t.Errorf("%d changed pods folded, want 1 (the second announcement; the third repeats it)", n)
	}
	if n := len(stagetest.ReadItems(t, s.JS, (*schema.CallBatch).GetPodsChanged)); n != 1 {
		t.Errorf("%d changed pods on CALLS, want 1", n)
	}

	replayEquals(t, s, "replay-changed", live)
}

// correlateAndFold starts a correlator and a graph stage (embedded store)
// on s, stopped at the test's end, and waits until the graph's pod edges
// are sim's truth and done holds; it returns the graph stage's host, the
// stage and that graph.
func correlateAndFold(t *testing.T, s *natstest.Server, sim *scenario.Sim, done func(*graphstage.Stage, *graph.Graph) error) (*stagetest.Host, *graphstage.Stage, *graph.Graph) {
	t.Helper()
	h := stagetest.NewHost(s.JS)
	cor := startCorrelator(t, h)
	t.Cleanup(func() { cor.Shutdown(context.Background()) })
	g := startGraph(t, h, graphSettings(t.TempDir(), nil))
	t.Cleanup(func() { g.Shutdown(context.Background()) })
	var live *graph.Graph
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		live = fetch(t, h)
		if err := scenario.Compare(sim.Truth, podEdges(live)); err != nil {
			return err
		}
		return done(g, live)
	})
	return h, g, live
}
