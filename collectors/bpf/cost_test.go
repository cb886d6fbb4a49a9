package bpf

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// TestHookCost runs each hook on real work (loopback TCP connections,
// unix-socket connects, process execs) with the kernel's BPF statistics
// on, and logs each hook's cost per run, one "hook-cost" line each: the
// kernel matrix reads them to compare a kernel's fallbacks with the
// newest kernel's code (under emulation only the ratio means anything).
func TestHookCost(t *testing.T) {
	requireRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Skipf("skipping: kernel.bpf_stats_enabled: %v (Linux 5.8+)", err)
	}
	defer stats.Close()
	c, err := open(Options{OpenAfter: testOpenAfter})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { // keep the ring drained; Close ends it
		var rec ringbuf.Record
		for c.Read(&rec) == nil {
		}
	}()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go closeAccepted(ln)
	for i := 0; i < 500; i++ {
		conn, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	path := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	go closeAccepted(uln)
	for i := 0; i < 200; i++ {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if out, err := exec.Command(self, "-test.run=^$").CombinedOutput(); err != nil {
			t.Fatalf("exec: %v: %s", err, out)
		}
	}

	costs, err := c.HookCosts()
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(costs))
	for n := range costs {
		names = append(names, n)
	}
	slices.Sort(names)
	k := c.Kernel()
	for _, n := range names {
		h := costs[n]
		if h.Runs == 0 || h.Runtime <= 0 {
			t.Errorf("%s: %d runs in %v: the hook did not run, or statistics are off", n, h.Runs, h.Runtime)
		}
		t.Logf("hook-cost %s %.0f ns/run over %d runs (%s object, casts %v)", n, h.NsPerRun(), h.Runs, k.Object, k.Casts)
	}
}

// closeAccepted accepts connections on ln and closes them, until ln is
// closed.
func closeAccepted(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		conn.Close()
	}
}
