package otlp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// The ground truth: the calls and process events the correlator and the
// collector emit for a small workload on two nodes.
//
//   - shop (Deployment, namespace shop, on node-a): container "app" runs
//     /usr/bin/shop (pid 100); container "envoy" runs envoy (pid 300).
//   - rabbitmq-0 (StatefulSet rabbitmq, namespace infra, on node-b):
//     container "rabbitmq" runs beam.smp (pid 200), a broker.
//
// shop calls rabbitmq over TCP through its Service VIP, talks to its envoy
// sidecar over a unix socket, and once fails to connect (ECONNREFUSED).

var (
	shopPod = &schema.Pod{
		Uid: "uid-shop", Name: "shop-7d9f-abcde", Namespace: "shop", Node: "node-a", Ips: []string{"10.0.1.5"},
		Labels: map[string]string{"app": "shop"},
		// As the metadata provider resolves it: owned by its ReplicaSet,
		// the Deployment its workload.
		Owners:   []*schema.OwnerRef{{Kind: "ReplicaSet", Name: "shop-7d9f", Uid: "uid-rs-shop", Controller: true}},
		Workload: &schema.OwnerRef{Kind: "Deployment", Name: "shop", Uid: "uid-deploy-shop", Controller: true},
		Containers: []*schema.Container{
			{Id: "cid-app", Name: "app", Image: "registry.local/shop:1.2"},
			{Id: "cid-envoy", Name: "envoy", Image: "envoyproxy/envoy:v1.30"},
		},
	}
	brokerPod = &schema.Pod{
		Uid: "uid-rabbit", Name: "rabbitmq-0", Namespace: "infra", Node: "node-b", Ips: []string{"10.0.2.7"},
		Owners:     []*schema.OwnerRef{{Kind: "StatefulSet", Name: "rabbitmq", Uid: "uid-sts-rabbit", Controller: true}},
		Workload:   &schema.OwnerRef{Kind: "StatefulSet", Name: "rabbitmq", Uid: "uid-sts-rabbit", Controller: true},
		Containers: []*schema.Container{{Id: "cid-rabbit", Name: "rabbitmq", Image: "rabbitmq:3.13"}},
	}
	appTask    = &schema.Task{Pid: 100, Tid: 100, Ppid: 1, Comm: "shop", Exe: "/usr/bin/shop", ContainerId: "cid-app", PodUid: "uid-shop", Attribution: schema.Attribution_ATTRIBUTION_POD}
	envoyTask  = &schema.Task{Pid: 300, Tid: 300, Ppid: 1, Comm: "envoy", Exe: "/usr/local/bin/envoy", ContainerId: "cid-envoy", PodUid: "uid-shop", Attribution: schema.Attribution_ATTRIBUTION_POD}
	brokerTask = &schema.Task{Pid: 200, Tid: 200, Ppid: 1, Comm: "beam.smp", Exe: "/usr/lib/erlang/erts/bin/beam.smp", ContainerId: "cid-rabbit", PodUid: "uid-rabbit", Attribution: schema.Attribution_ATTRIBUTION_POD}
)

func ip(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }

var base = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

// tcpCall is shop → rabbitmq, i is its number.
func tcpCall(i int) *schema.Call {
	start := base.Add(time.Duration(i) * time.Second)
	return &schema.Call{
		Id: fmt.Sprintf("node-a/tcp/%d", i), Transport: schema.Transport_TRANSPORT_TCP,
		Client: &schema.Endpoint{Node: "node-a", Address: ip("10.0.1.5"), Port: uint32(40000 + i), Task: appTask, Pod: shopPod, Container: shopPod.Containers[0]},
		Server: &schema.Endpoint{Node: "node-b", Address: ip("10.0.2.7"), Port: 5672, Task: brokerTask, Pod: brokerPod, Container: brokerPod.Containers[0], BrokerKind: "rabbitmq"},
		Port:   5672, BytesSent: 1200, BytesReceived: 3400,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(250 * time.Millisecond).UnixNano()),
		DialedAddress: ip("10.96.0.10"), DialedPort: 5672,
	}
}

// unixCall is shop's app container → its envoy sidecar.
func unixCall(i int) *schema.Call {
	start := base.Add(time.Duration(i)*time.Second + 500*time.Millisecond)
	return &schema.Call{
		Id: fmt.Sprintf("node-a/unix/%d", i), Transport: schema.Transport_TRANSPORT_UNIX,
		Client: &schema.Endpoint{Node: "node-a", Task: appTask, Pod: shopPod, Container: shopPod.Containers[0]},
		Server: &schema.Endpoint{Node: "node-a", Task: envoyTask, Pod: shopPod, Container: shopPod.Containers[1]},
		Path:   "/var/run/envoy.sock", BytesSent: 10, BytesReceived: 20,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(10 * time.Millisecond).UnixNano()),
	}
}

// failedCall is a refused connect from shop to rabbitmq.
func failedCall(i int) *schema.Call {
	c := tcpCall(i)
	c.Id = fmt.Sprintf("node-a/fail/%d", i)
	c.Errno = int32(syscall.ECONNREFUSED)
	c.BytesSent, c.BytesReceived = 0, 0
	c.EndUnixNano = c.StartUnixNano + uint64(time.Millisecond)
	c.Partial = true
	c.Server.Task = nil
	return c
}

// workload is n rounds of one TCP call, one unix call and, every third
// round, one failed connect.
func workload(n int) []*schema.Call {
	var calls []*schema.Call
	for i := range n {
		calls = append(calls, tcpCall(i), unixCall(i))
		if i%3 == 0 {
			calls = append(calls, failedCall(i))
		}
	}
	return calls
}

func wantSpans(calls []*schema.Call) int {
	n := 0
	for _, c := range calls {
		if c.Errno != 0 {
			n++
		} else {
			n += 2
		}
	}
	return n
}

// processEvents are node-a's pod announcement, and the exec and exit of
// shop's process.
func processEvents() []*schema.Event {
	return []*schema.Event{
		{TimeUnixNano: uint64(base.UnixNano()), Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: shopPod}}},
		{TimeUnixNano: uint64(base.Add(time.Second).UnixNano()), Task: appTask, Body: &schema.Event_Exec{Exec: &schema.ProcessExec{Argv: []string{"/usr/bin/shop", "--port", "8080"}}}},
		{TimeUnixNano: uint64(base.Add(time.Minute).UnixNano()), Task: appTask, Body: &schema.Event_Exit{Exit: &schema.ProcessExit{ExitCode: 1, LifetimeNs: uint64(59 * time.Second)}}},
	}
}

func publishCalls(t testing.TB, nc *nats.Conn, calls []*schema.Call, batchItems int) {
	t.Helper()
	ctx := context.Background()
	p, err := publish.New(nc, publish.Config{Stage: "correlator", Node: "node-a", Type: &schema.CallBatch{}, MaxBatchItems: batchItems}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range calls {
		if err := p.Publish(ctx, schema.CallSubject("node-a"), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func publishEvents(t testing.TB, nc *nats.Conn, events []*schema.Event) {
	t.Helper()
	ctx := context.Background()
	p, err := publish.New(nc, publish.Config{Stage: "collector", Node: "node-a", Type: &schema.EventBatch{}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		kind := schema.KindProcess
		if ev.GetPod() != nil {
			kind = schema.KindPod
		}
		if err := p.Publish(ctx, schema.EventSubject("node-a", kind), ev); err != nil {
			t.Fatal(err)
		}
		// Pods first: the collector announces a pod before its processes.
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// host is the stage host of a test.
type host struct {
	js    jetstream.JetStream
	fatal chan error
}

func newHost(s *natstest.Server) *host { return &host{js: s.JS, fatal: make(chan error, 1)} }

func (h *host) JetStream() jetstream.JetStream { return h.js }
func (h *host) Handle(string, http.Handler)    {}
func (h *host) Fatal(err error)                { h.fatal <- err }

var _ stage.Host = (*host)(nil)
