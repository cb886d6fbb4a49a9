package collector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/node"
	"github.com/weftobs/weft/testenv/stagehost"
)

// byStage collects the events on EVENTS by the stage that published them
// (the batch's origin).
type byStage struct {
	mu  sync.Mutex
	all map[string][]*schema.Event
}

func collectByStage(t *testing.T, js jetstream.JetStream) *byStage {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cons, err := js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ev := &byStage{all: map[string][]*schema.Event{}}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			t.Errorf("decode batch on %s: %v", m.Subject(), err)
			return
		}
		ev.mu.Lock()
		ev.all[b.GetOrigin().GetStage()] = append(ev.all[b.GetOrigin().GetStage()], b.GetEvents()...)
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return ev
}

func (ev *byStage) of(stage string) []*schema.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]*schema.Event(nil), ev.all[stage]...)
}

// eventPod is the pod an event is about: its task's, or the pod a pod
// event announces.
func eventPod(e *schema.Event) string {
	if p := e.GetPod(); p != nil {
		return p.GetPod().GetUid()
	}
	return e.GetTask().GetPodUid()
}

// TestSidecarsReportTheirOwnPod: two collectors run as sidecars of two
// pods on one node (each with the node-wide hooks a sidecar gets), and a
// third pod has none. Pod A calls pod B, and pod C calls pod B too. Each
// sidecar publishes its own pod's side and process events and nothing of
// any other pod; C's client side is published by no one.
func TestSidecarsReportTheirOwnPod(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	ev := collectByStage(t, ns.JS)

	n := node.New(t, "node-s")
	podA := n.AddPod("app-a", "shop", false, "app", "weft")
	podB := n.AddPod("app-b", "shop", false, "app", "weft")
	podC := n.AddPod("app-c", "shop", false, "app")
	meta := n.WriteMetadata(t.TempDir())
	sidecars := map[string]*node.Pod{"weft-a": podA, "weft-b": podB}
	stages := map[string]*Stage{}
	for name, pod := range sidecars {
		cfg := NewConfig()
		cfg.Metadata = MetadataConfig{Provider: ProviderFile, File: meta}
		cfg.Pod = pod.UID
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		s := New(stage.Settings{Name: name, Kind: "collector", Node: n.Name, Config: cfg}, cfg)
		if err := s.Start(context.Background(), stagehost.New(ns.JS)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown(context.Background()) })
		stages[name] = s
	}

	srv, srvOut := start(t, podB.Container("app"), "server", "tcp", "0.0.0.0:7000", "2", "100", "200")
	line(t, srvOut, "listening ")
	cliA, _ := start(t, podA.Container("app"), "client", "tcp", podB.IP+":7000", "100", "200", "0")
	wait(t, cliA, 0)
	cliC, _ := start(t, podC.Container("app"), "client", "tcp", podB.IP+":7000", "100", "200", "0")
	wait(t, cliC, 0)
	wait(t, srv, 0)

	has := func(stage string, what string, f func(*schema.Event) bool) {
		t.Helper()
		natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			for _, e := range ev.of(stage) {
				if f(e) {
					return nil
				}
			}
			return fmt.Errorf("%s published no %s", stage, what)
		})
	}
	// A: its client's connect and close, its exec and exit, its pod.
	has("weft-a", "client close of A", hasTCP(cliA.Process.Pid, schema.TCPPhase_TCP_PHASE_CLOSE))
	has("weft-a", "exit of A's client", func(e *schema.Event) bool { return e.GetExit() != nil && int(e.GetTask().GetPid()) == cliA.Process.Pid })
	has("weft-a", "pod A", func(e *schema.Event) bool { return e.GetPod().GetPod().GetUid() == podA.UID })
	// B: both connections' server sides (from A and from C), its
	// server's exit.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		closes := 0
		for _, e := range ev.of("weft-b") {
			if hasTCP(srv.Process.Pid, schema.TCPPhase_TCP_PHASE_CLOSE)(e) {
				closes++
			}
		}
		if closes != 2 {
			return fmt.Errorf("weft-b published %d server closes, want 2 (A's and C's connections)", closes)
		}
		return nil
	})
	has("weft-b", "exit of B's server", func(e *schema.Event) bool { return e.GetExit() != nil && int(e.GetTask().GetPid()) == srv.Process.Pid })

	// Everything the two published is their own pod's: nothing of the
	// other sidecar's pod, of C, or of the host (this test's process).
	for name, pod := range sidecars {
		events := ev.of(name)
		for _, e := range events {
			if got := eventPod(e); got != pod.UID {
				t.Errorf("%s published an event of pod %q (want only %s, its own): %v", name, got, pod.UID, e)
			}
		}
		if st := stages[name].Stats(); st.Filtered == 0 {
			t.Errorf("%s filtered nothing: its hooks see the whole node, so other pods' events must be left out", name)
		}
		t.Logf("%s: %d events published, %d left out", name, len(events), stages[name].Stats().Filtered)
	}
	for _, name := range []string{"weft-a", "weft-b"} {
		for _, e := range ev.of(name) {
			if int(e.GetTask().GetPid()) == cliC.Process.Pid {
				t.Errorf("%s published C's client: %v", name, e)
			}
		}
	}
}
