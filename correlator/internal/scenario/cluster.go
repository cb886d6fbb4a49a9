package scenario

import (
	"net/netip"

	"github.com/weftobs/weft/streams/schema"
)

// T0 is the scenarios' start time: 2026-01-01T00:00:00Z.
const T0 = uint64(1767225600) * 1e9

// Cluster is a small two-node cluster: an app pod on node-a, a NATS broker
// pod on node-b behind a Service VIP, an app pod with a broker sidecar
// reached over a unix socket, and a host-network Redis on node-a.
type Cluster struct {
	App, Broker, SidecarPod, Redis       *schema.Pod
	AppProc, BrokerProc                  Proc
	SidecarApp, SidecarBroker, RedisProc Proc
	AppAddr, BrokerAddr, VIP, RedisAddr  netip.Addr
}

// pod is a pod as the metadata provider describes it: owned by ownerKind
// ownerName (a ReplicaSet, a StatefulSet; none for a bare pod), whose top
// controller is workload (a ReplicaSet's Deployment; nil: the owner).
func pod(uid, name, ns, node, ip string, hostNet bool, labels map[string]string, ownerKind, ownerName string, workload *schema.OwnerRef, containers ...*schema.Container) *schema.Pod {
	p := &schema.Pod{Uid: uid, Name: name, Namespace: ns, Node: node, Ips: []string{ip}, HostNetwork: hostNet, Labels: labels, Containers: containers}
	if ownerKind != "" {
		owner := &schema.OwnerRef{Kind: ownerKind, Name: ownerName, Uid: "own-" + ownerName, Controller: true}
		p.Owners = []*schema.OwnerRef{owner}
		p.Workload = owner
		if workload != nil {
			p.Workload = workload
		}
	}
	return p
}

// deployment is the top controller of a Deployment's pods.
func deployment(name string) *schema.OwnerRef {
	return &schema.OwnerRef{Kind: "Deployment", Name: name, Uid: "own-" + name, Controller: true}
}

// NewCluster returns the cluster; its pods are announced at T0 by Up.
func NewCluster() *Cluster {
	c := &Cluster{
		AppAddr: netip.MustParseAddr("10.0.1.5"), BrokerAddr: netip.MustParseAddr("10.0.2.7"),
		VIP: netip.MustParseAddr("10.96.0.10"), RedisAddr: netip.MustParseAddr("192.168.1.10"),
	}
	appC := &schema.Container{Id: "c-app", Name: "app", Image: "example/app:1"}
	natsC := &schema.Container{Id: "c-nats", Name: "nats", Image: "nats:2.10"}
	scApp := &schema.Container{Id: "c-orders", Name: "orders", Image: "example/orders:1"}
	scBroker := &schema.Container{Id: "c-signer", Name: "signer", Image: "example/crypto-broker:1"}
	redisC := &schema.Container{Id: "c-redis", Name: "redis", Image: "redis:7"}
	c.App = pod("uid-app", "app-7d9f-x2x4z", "shop", "node-a", "10.0.1.5", false, map[string]string{"app": "shop", "pod-template-hash": "7d9f"},
		"ReplicaSet", "app-7d9f", deployment("app"), appC)
	c.Broker = pod("uid-nats", "nats-0", "infra", "node-b", "10.0.2.7", false, map[string]string{"app.kubernetes.io/name": "nats"},
		"StatefulSet", "nats", nil, natsC)
	c.SidecarPod = pod("uid-orders", "orders-5c8b-q7w2p", "shop", "node-a", "10.0.1.9", false, map[string]string{"app": "orders", "pod-template-hash": "5c8b"},
		"ReplicaSet", "orders-5c8b", deployment("orders"), scApp, scBroker)
	c.Redis = pod("uid-redis", "redis-node-a", "infra", "node-a", "192.168.1.10", true, map[string]string{"app": "redis"}, "", "", nil, redisC)
	c.AppProc = Proc{Node: "node-a", Pod: c.App, Container: appC, Pid: 100, Exe: "/app/shop"}
	c.BrokerProc = Proc{Node: "node-b", Pod: c.Broker, Container: natsC, Pid: 200, Exe: "/nats-server"}
	c.SidecarApp = Proc{Node: "node-a", Pod: c.SidecarPod, Container: scApp, Pid: 300, Exe: "/app/orders"}
	c.SidecarBroker = Proc{Node: "node-a", Pod: c.SidecarPod, Container: scBroker, Pid: 301, Exe: "/usr/bin/signer"}
	c.RedisProc = Proc{Node: "node-a", Pod: c.Redis, Container: redisC, Pid: 400, Exe: "/usr/local/bin/redis-server"}
	return c
}

// Up announces every pod at T0.
func (c *Cluster) Up(s *Sim) {
	for _, p := range []*schema.Pod{c.App, c.Broker, c.SidecarPod, c.Redis} {
		s.PodUp(T0, p)
	}
}

// Traffic adds n rounds of the three scenarios starting at T0+1ms, one
// round every step nanoseconds: app → NATS over TCP through the VIP, app →
// sidecar over a unix socket, app → node-local host-network Redis.
func (c *Cluster) Traffic(s *Sim, n int, step uint64) {
	for i := range n {
		t := T0 + 1e6 + uint64(i)*step
		port := uint16(20000 + 2*(i%20000))
		s.TCP(Conn{Client: c.AppProc, Server: c.BrokerProc,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, port), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Dialed: netip.AddrPortFrom(c.VIP, 4222), Start: t, Dur: 2e6, Sent: 100 + uint64(i%7), Received: 2000})
		s.Unix(c.SidecarApp, c.SidecarBroker, "/var/run/crypto-broker.sock", t+1e5)
		s.TCP(Conn{Client: c.AppProc, Server: c.RedisProc,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, port+1), ServerAddr: netip.AddrPortFrom(c.RedisAddr, 6379),
			Start: t + 2e5, Dur: 5e5, Sent: 30, Received: 7})
	}
}
