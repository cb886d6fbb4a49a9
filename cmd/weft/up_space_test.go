package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftobs/weft/testenv/natstest"
)

// TestUpFitsSmallDisk runs `weft up` with a data dir on a 600 MiB
// filesystem, where the built-in topology's two 1 GiB streams do not fit:
// it starts, with the streams shrunk to fit, and says so.
func TestUpFitsSmallDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dataDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dataDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dataDir, err, out)
		}
	})
	httpAddr, natsAddr := freePort(t), freePort(t)
	p := start(t, "up", "--demo", "--data-dir", dataDir, "--listen", httpAddr, "--nats-listen", natsAddr)
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			t.Fatalf("weft up exited: %v; stderr:\n%s", err, p.stderr)
		default:
		}
		code, _, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	p.stop(t, syscall.SIGINT)
	out := p.stdout.String()
	for _, want := range []string{"storage    EVENTS ", "CALLS ", "reserved of ", "shrunk to fit", "maxBytes", "weft up -f"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	t.Logf("stdout:\n%s", out)
}
