package main

import (
	"fmt"
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
