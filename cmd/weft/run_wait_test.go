package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftobs/weft/testenv/natstest"
)

// TestRunWaitsForNATS starts a stage (`weft run`, as the chart's pods do)
// before its NATS exists, as on a fresh install: it stays up, /readyz says
// it is waiting for NATS, and once the server comes up it connects,
// provisions and serves as ready.
func TestRunWaitsForNATS(t *testing.T) {
	httpAddr, natsAddr := freePort(t), freePort(t)
	p := start(t, "run", "-f", "../../examples/topologies/local.yaml", "--stage", "correlator",
		"--data-dir", t.TempDir(), "--listen", httpAddr, "--nats-url", "nats://"+natsAddr)
	alive := func() {
		select {
		case err := <-p.done:
			t.Fatalf("weft run exited: %v; stderr:\n%s", err, p.stderr)
		default:
		}
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		alive()
		code, body, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 503 || !strings.Contains(body, "waiting for NATS (attempt 2)") || !strings.Contains(body, natsAddr) {
			return fmt.Errorf("readyz %d %q %v", code, body, err)
		}
		return nil
	})
	if code, _, err := httpGet("http://" + httpAddr + "/healthz"); err != nil || code != 200 {
		t.Fatalf("healthz while waiting for NATS: %d %v, want 200 (alive, not ready)", code, err)
	}
	natstest.StartIn(t, t.TempDir(), natsAddr)
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		alive()
		code, body, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %q %v", code, body, err)
		}
		return nil
	})
	p.stop(t, syscall.SIGINT)
	if !strings.Contains(p.stderr.String(), "waiting for NATS") {
		t.Errorf("the log does not say it waited for NATS:\n%s", p.stderr)
	}
}

// waitTopology: a collector DaemonSet (a synthetic source in the
// collector's place) and the correlator that creates the streams.
const waitTopology = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: wait}
streams:
  EVENTS: {subjects: ["weft.events.>"], maxAge: 1h}
  CALLS:  {subjects: ["weft.calls.>"], maxAge: 1h}
stages:
  - {name: collector,  kind: synthetic,  deploy: daemonset, outputs: [EVENTS], config: {rate: 200, nodes: 1}}
  - {name: correlator, kind: correlator, deploy: deployment, inputs: [EVENTS], outputs: [CALLS]}
`

// TestCollectorWaitsForStreams starts a collector DaemonSet's process
// before any process that creates the streams, as on a fresh install: it
// stays up, /readyz says which streams it waits for and who creates
// them, its log says so once; once the correlator has started and created
// them, the collector is ready and publishes.
func TestCollectorWaitsForStreams(t *testing.T) {
	s := natstest.Start(t)
	topo := filepath.Join(t.TempDir(), "wait.yaml")
	writeFile(t, topo, []byte(waitTopology))
	colAddr := freePort(t)
	col := startEnv(t, []string{"WEFT_NODE_NAME=node-a"}, "run", "-f", topo, "--stage", "collector",
		"--data-dir", t.TempDir(), "--listen", colAddr, "--nats-url", s.URL())
	alive := func() {
		select {
		case err := <-col.done:
			t.Fatalf("the collector exited: %v; stderr:\n%s", err, col.stderr)
		default:
		}
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		alive()
		code, body, err := httpGet("http://" + colAddr + "/readyz")
		want := "waiting for streams DLQ, EVENTS to be created by stage correlator (attempt 3)"
		if err != nil || code != 503 || !strings.Contains(body, want) {
			return fmt.Errorf("readyz %d %q %v, want 503 %q", code, body, err, want)
		}
		return nil
	})
	if _, err := s.JS.Stream(context.Background(), "EVENTS"); err == nil {
		t.Fatal("the collector created EVENTS")
	}

	corAddr := freePort(t)
	start(t, "run", "-f", topo, "--stage", "correlator", "--data-dir", t.TempDir(), "--listen", corAddr, "--nats-url", s.URL())
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		alive()
		code, body, err := httpGet("http://" + colAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("collector readyz %d %q %v", code, body, err)
		}
		if st := streamState(t, s.JS, "EVENTS"); st.Msgs == 0 {
			return errors.New("no events in EVENTS yet")
		}
		return nil
	})
	if n := strings.Count(col.stderr.String(), "waiting for streams to be created"); n != 1 {
		t.Errorf("the collector logged its wait %d times, want once:\n%s", n, col.stderr)
	}
	if !strings.Contains(col.stderr.String(), `streams="[DLQ EVENTS]" by=[correlator]`) {
		t.Errorf("the wait's log line names no streams or creator:\n%s", grepLines(col.stderr.String(), "waiting"))
	}
}
