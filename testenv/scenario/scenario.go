// Package scenario runs the call patterns weft must see on a simulated node
// (testenv/node) and returns their ground truth, for collector and
// correlator tests:
//
//   - an app pod calling a broker pod over TCP;
//   - an app container calling its broker sidecar over a unix socket in a
//     volume the pod's containers share;
//   - an app calling a node-local broker on the host network (the
//     DaemonSet pattern).
//
// The processes are testenv/workload roles, so the test binary's TestMain
// must call workload.Main.
package scenario

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/testenv/node"
	"github.com/weftobs/weft/testenv/workload"
)

// Call is one connection the scenario made, as the workload saw it.
type Call struct {
	// Transport is "tcp" or "unix".
	Transport      string
	Client, Server *node.Container
	ClientPid      int
	ServerPid      int
	// ServerAddr is ip:port (tcp) or the socket path (unix); ClientAddr is
	// the client's ip:port (tcp).
	ServerAddr, ClientAddr string
	// BytesSent is client → server, BytesReceived server → client.
	BytesSent, BytesReceived int
	// ClientExit is the client's exit code.
	ClientExit int
}

// Truth is what the scenario built and did.
type Truth struct {
	Node                *node.Node
	App, Broker, Daemon *node.Pod
	// MetadataPath describes every pod (collectors/metadata file format).
	MetadataPath string
	Calls        []Call
}

// Pods adds the scenario's pods to n: app (containers app and
// broker-sidecar) and broker in namespace shop, node-broker (host network)
// in namespace infra, and writes the metadata file.
func Pods(t testing.TB, n *node.Node) *Truth {
	t.Helper()
	tr := &Truth{Node: n}
	tr.App = n.AddPod("app", "shop", false, "app", "broker-sidecar")
	tr.Broker = n.AddPod("broker", "shop", false, "broker")
	tr.Daemon = n.AddPod("node-broker", "infra", true, "broker")
	tr.Daemon.Controller = "DaemonSet" // a node-local daemon, as on a cluster
	tr.MetadataPath = n.WriteMetadata(t.TempDir())
	return tr
}

// Run makes the three calls, one after the other, and returns when every
// process has exited.
func (tr *Truth) Run(t testing.TB) {
	t.Helper()
	app := tr.App.Container("app")
	tr.Calls = append(tr.Calls,
		call(t, "tcp", app, tr.Broker.Container("broker"), "0.0.0.0:7100", tr.Broker.IP+":7100", 1000, 2000, 3),
		call(t, "unix", app, tr.App.Container("broker-sidecar"), filepath.Join(t.TempDir(), "broker.sock"), "", 10, 20, 0),
		call(t, "tcp", app, tr.Daemon.Container("broker"), tr.Node.IP+":7101", tr.Node.IP+":7101", 300, 400, 0),
	)
}

func call(t testing.TB, transport string, client, server *node.Container, listen, dial string, up, down, exit int) Call {
	t.Helper()
	if dial == "" {
		dial = listen
	}
	c := Call{Transport: transport, Client: client, Server: server, ServerAddr: dial, BytesSent: up, BytesReceived: down, ClientExit: exit}
	srv, srvOut := start(t, server, "server", transport, listen, "1", fmt.Sprint(up), fmt.Sprint(down))
	expect(t, srvOut, "listening ")
	cli, cliOut := start(t, client, "client", transport, dial, fmt.Sprint(up), fmt.Sprint(down), fmt.Sprint(exit))
	if transport == "tcp" {
		c.ClientAddr = expect(t, cliOut, "local ")
	}
	c.ClientPid, c.ServerPid = cli.Process.Pid, srv.Process.Pid
	for _, p := range []*exec.Cmd{cli, srv} {
		p.Wait()
	}
	if got := cli.ProcessState.ExitCode(); got != exit {
		t.Fatalf("%s client exited %d, want %d", transport, got, exit)
	}
	return c
}

func start(t testing.TB, c *node.Container, role string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd, err := workload.Command(c.Command, role, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	node.Release(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, bufio.NewScanner(out)
}

func expect(t testing.TB, sc *bufio.Scanner, prefix string) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	select {
	case l := <-got:
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("want a %q line, got %q", prefix, l)
		}
		return strings.TrimPrefix(l, prefix)
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q line after 10s", prefix)
	}
	return ""
}
