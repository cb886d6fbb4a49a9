package provision_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestWaitStreams: a node-local stage's process waits for the streams
// its stages use, being told each time which are still missing, and
// returns once another process has created them; a stop while waiting
// ends it at once, naming them.
func TestWaitStreams(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	var mu sync.Mutex
	var seen [][]string
	done := make(chan error, 1)
	go func() {
		done <- provision.WaitStreams(ctx, s.JS, []string{"DLQ", "EVENTS"}, func(n int, missing []string) {
			mu.Lock()
			seen = append(seen, missing)
			mu.Unlock()
		})
	}()
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return nil
		}
		return seen[len(seen)-1]
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := last(); !slices.Equal(got, []string{"DLQ", "EVENTS"}) {
			return errors.New("not told both streams are missing")
		}
		return nil
	})
	s.CreateStream(t, "EVENTS", "weft.events.>")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := last(); !slices.Equal(got, []string{"DLQ"}) {
			return errors.New("not told only DLQ is missing")
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("returned with DLQ missing: %v", err)
	default:
	}
	s.CreateStream(t, "DLQ", "weft.dlq.>")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * provision.MaxWait):
		t.Fatal("still waiting once both streams exist")
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- provision.WaitStreams(cctx, s.JS, []string{"CALLS"}, nil) }()
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "CALLS") {
			t.Fatalf("stopped while waiting: %v, want an error naming CALLS", err)
		}
	case <-time.After(2 * provision.MaxWait):
		t.Fatal("a stop did not end the wait")
	}
}

// TestCreatorsAndStreamsOf: the stages that create the streams are those
// not node-local; a process's streams are its stages' inputs and outputs
// and the DLQ.
func TestCreatorsAndStreamsOf(t *testing.T) {
	none := func(stage.Settings) (stage.Stage, error) { return nil, nil }
	reg := stage.NewRegistry()
	reg.Register(stage.Kind{Name: "src", Source: true, Deploy: []stage.DeployMode{stage.DeployDaemonSet}, New: none})
	reg.Register(stage.Kind{Name: "mid", Deploy: []stage.DeployMode{stage.DeployDeployment}, New: none})
	reg.Register(stage.Kind{Name: "sink", Sink: true, Deploy: []stage.DeployMode{stage.DeployDeployment, stage.DeploySidecar}, New: none})
	top, err := topology.Parse("t.yaml", []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
  CALLS:  {subjects: ["weft.calls.>"]}
stages:
  - {name: collector,  kind: src,  deploy: daemonset, outputs: [EVENTS]}
  - {name: correlator, kind: mid,  deploy: deployment, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph,      kind: sink, deploy: deployment, inputs: [CALLS]}
  - {name: node-otlp,  kind: sink, deploy: sidecar, sidecarOf: collector, inputs: [EVENTS]}
`), reg)
	if err != nil {
		t.Fatal(err)
	}
	if got := provision.Creators(top); !slices.Equal(got, []string{"correlator", "graph"}) {
		t.Errorf("creators %q, want correlator and graph", got)
	}
	if got := provision.StreamsOf(top, []string{"collector", "node-otlp"}); !slices.Equal(got, []string{"DLQ", "EVENTS"}) {
		t.Errorf("the collector DaemonSet's streams %q, want DLQ and EVENTS", got)
	}
}
