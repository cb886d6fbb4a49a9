package correlate_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/collectors/collector"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/node"
	"github.com/weftobs/weft/testenv/scenario"
	"github.com/weftobs/weft/testenv/workload"
)

func TestMain(m *testing.M) {
	workload.Main() // the scenario's processes are this binary
	code := m.Run()
	removeWeftBinary()
	os.Exit(code)
}

// TestKernelToCalls: the simulated node's calls, captured by the real
// collector from the kernel, become exactly those calls on CALLS: pod to
// pod over TCP with exact bytes, app container to its sidecar over a unix
// socket, app to the host-network broker.
func TestKernelToCalls(t *testing.T) {
	s, tr := kernelNode(t, "node-k")

	tr.Run(t)
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		calls := stagetest.ReadCalls(t, s.JS)
		for _, want := range tr.Calls {
			if err := findCall(calls, want); err != nil {
				return err
			}
		}
		return nil
	})
}

// findCall finds the call want made among calls, checking both ends'
// containers (pod and container id) and, for TCP, the exact bytes.
func findCall(calls []*schema.Call, want scenario.Call) error {
	transport := schema.Transport_TRANSPORT_TCP
	if want.Transport == "unix" {
		transport = schema.Transport_TRANSPORT_UNIX
	}
	same := func(e *schema.Endpoint, c *node.Container) bool {
		return e.GetPod().GetUid() == c.Pod.UID && e.GetContainer().GetId() == c.ID
	}
	var near []string
	for _, c := range calls {
		if c.GetTransport() != transport || !same(c.GetClient(), want.Client) || !same(c.GetServer(), want.Server) {
			continue
		}
		switch {
		case transport == schema.Transport_TRANSPORT_UNIX && c.GetPath() != want.ServerAddr:
			near = append(near, fmt.Sprintf("path %q", c.GetPath()))
		case transport == schema.Transport_TRANSPORT_TCP && (int(c.GetBytesSent()) != want.BytesSent || int(c.GetBytesReceived()) != want.BytesReceived):
			near = append(near, fmt.Sprintf("bytes %d/%d", c.GetBytesSent(), c.GetBytesReceived()))
		case c.GetPartial():
			near = append(near, "partial")
		default:
			return nil
		}
	}
	return fmt.Errorf("no %s call %s/%s → %s/%s (%s) among %d calls; near misses: %v", want.Transport,
		want.Client.Pod.Name, want.Client.Name, want.Server.Pod.Name, want.Server.Name, want.ServerAddr, len(calls), near)
}

// kernelNode is a simulated node (real network namespaces and cgroups)
// named name, its pods' metadata in a file, with the real collector on it
// and a correlator, both on a fresh embedded NATS; it skips unless root
// may run eBPF.
func kernelNode(t *testing.T, name string) (*natstest.Server, *scenario.Truth) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the collector and the simulated node need root (CAP_BPF, CAP_PERFMON, netns, cgroups); CI runs as root")
	}
	if err := bpf.CheckPrivileges(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	tr := scenario.Pods(t, node.New(t, name))

	cfg := collector.NewConfig()
	cfg.Metadata = collector.MetadataConfig{Provider: collector.ProviderFile, File: tr.MetadataPath}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	coll := collector.New(stage.Settings{Name: "collector", Kind: "collector", Node: tr.Node.Name, Config: cfg, Counters: &stage.Counters{}}, cfg)
	if err := coll.Start(context.Background(), stagetest.NewHost(s.JS)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Shutdown(context.Background()) })
	corr := start(t, stagetest.NewHost(s.JS), testConfig())
	t.Cleanup(func() { corr.Shutdown(context.Background()) })
	return s, tr
}
