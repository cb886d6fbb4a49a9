package scenario

import (
	"fmt"
	"net/netip"

	"github.com/weftobs/weft/streams/schema"
)

// Fleet is a cluster of many pods for benchmarks of what comes after the
// correlator: its calls are built directly in the shape join emits them
// (each endpoint with its node, address, task, the pod as the pod index
// holds it — labels, owners, containers — and its container; the call's
// id, halves, and the Service VIP it dialed), without running the join.
type Fleet struct {
	clients, servers []Proc
	edges            int
}

// NewFleet returns edges distinct client → server pod pairs over 10 nodes:
// edges client pods (one Deployment per 10) each calling one of 50 server
// pods (StatefulSets of 10; the first ten are NATS brokers by label).
func NewFleet(edges int) *Fleet {
	f := &Fleet{edges: edges}
	mk := func(role string, i int, owner, ownerKind string, labels map[string]string) Proc {
		node := fmt.Sprintf("ip-10-0-%d-%d.ec2.internal", i%10, 10+i%10)
		uid := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i, i%0xffff, i%0xfff, i%0xfff, 0x5eed0000+i)
		cid := fmt.Sprintf("%s%058x", role[:1]+"c0ffee", i)
		image := fmt.Sprintf("registry.example.com/shop/%s:1.%d.0", owner, i%7)
		ctr := &schema.Container{Id: cid, Name: role, Image: image}
		side := &schema.Container{Id: fmt.Sprintf("%s%058x", role[:1]+"51de0", i), Name: "envoy", Image: "envoyproxy/envoy:v1.30.1"}
		// As on a cluster: a Deployment owns its pods through a
		// ReplicaSet, a StatefulSet directly.
		workload := &schema.OwnerRef{Kind: ownerKind, Name: owner, Uid: "own-" + owner, Controller: true}
		direct := workload
		if ownerKind == "Deployment" {
			direct = &schema.OwnerRef{Kind: "ReplicaSet", Name: owner + "-7d9f8c", Uid: "own-rs-" + owner, Controller: true}
		}
		pod := &schema.Pod{Uid: uid, Name: fmt.Sprintf("%s-%d-7d9f8c-%05d", owner, i%10, i), Namespace: "shop", Node: node,
			Ips: []string{netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()}, Labels: labels,
			Owners: []*schema.OwnerRef{direct}, Workload: workload, Containers: []*schema.Container{ctr, side}}
		return Proc{Node: node, Pod: pod, Container: ctr, Pid: uint32(1000 + i), Exe: "/app/" + role}
	}
	for i := range edges {
		owner := fmt.Sprintf("frontend-%d", i/10)
		f.clients = append(f.clients, mk("client", i, owner, "Deployment",
			map[string]string{"app.kubernetes.io/name": owner, "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7d9f8c"}))
	}
	for i := range 50 {
		owner, name := fmt.Sprintf("backend-%d", i/10), "backend"
		if i < 10 {
			owner, name = "nats", "nats"
		}
		f.servers = append(f.servers, mk("server", 1<<15+i, owner, "StatefulSet",
			map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", "statefulset.kubernetes.io/pod-name": owner}))
	}
	return f
}

// Call fills c with the i-th call: client pod i%edges calling server pod
// (i%edges)%50 on port 4222 through a Service VIP. c's endpoints are
// overwritten; the pods are shared between calls, as the pod index shares
// them.
func (f *Fleet) Call(i int, c *schema.Call) {
	e := i % f.edges
	cli, srv := f.clients[e], f.servers[e%len(f.servers)]
	start := T0 + uint64(i)*1000
	cookie := uint64(1)<<40 + uint64(i)
	cliHalf := fmt.Sprintf("tcp:%s:%x:%x", cli.Node, cookie, start)
	srvHalf := fmt.Sprintf("tcp:%s:%x:%x", srv.Node, cookie+1<<39, start+40_000)
	cliAddr, srvAddr := netip.MustParseAddr(cli.Pod.GetIps()[0]), netip.MustParseAddr(srv.Pod.GetIps()[0])
	*c = schema.Call{Id: cliHalf, Transport: schema.Transport_TRANSPORT_TCP, Port: 4222,
		BytesSent: 100 + uint64(i%7), BytesReceived: 2000, StartUnixNano: start, EndUnixNano: start + 2e6,
		DialedAddress: []byte{10, 96, 0, 10}, DialedPort: 4222, Halves: []string{cliHalf, srvHalf},
		Client: &schema.Endpoint{Node: cli.Node, Address: cliAddr.AsSlice(), Port: uint32(20000 + i%40000), Task: task(cli), Pod: cli.Pod, Container: cli.Container},
		Server: &schema.Endpoint{Node: srv.Node, Address: srvAddr.AsSlice(), Port: 4222, Task: task(srv), Pod: srv.Pod, Container: srv.Container}}
}

func task(p Proc) *schema.Task {
	t := p.Task()
	t.Ppid, t.Uid, t.CgroupId = 1, 65532, uint64(p.Pid)<<8
	return t
}
