package synthetic

import (
	"container/heap"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// The simulated cluster is what a small real one looks like to weft's
// collectors: per node, a NATS broker (a StatefulSet's pod) and app pods
// of two Deployments (frontend, shop), each pod owned by its Deployment's
// ReplicaSet as Kubernetes makes it, each container running its own
// process (its own pid, cgroup, executable). Over real time:
//
//   - every app process holds one long-lived connection to its node's
//     broker, opened when it starts and closed when it exits;
//   - frontend pods make short calls to shop pods (port 8080), shop pods
//     short calls to the broker (4222), each open a few milliseconds;
//   - every probeEvery one pod runs an exec probe: a short process, exec
//     then exit, as the kubelet's exec probes do;
//   - every restartEvery one app pod restarts, in turn one of two ways:
//     its process crashes (exit code 1), its broker connection closes,
//     and after a back-off the kubelet starts a new container (new id,
//     new pid) that connects again; or the pod is deleted (as a rollout
//     or an eviction does: its process exits 0, its connections close,
//     the node announces the delete) and after the back-off its
//     ReplicaSet's new pod (new uid, name and container, the freed IP
//     again) takes its place. The deleted pod stays in the truth, ended.
//
// Every event carries the wall-clock time it stands for, and the generator
// keeps the ground truth of what it emitted (Truth): what a correct
// pipeline must show.

// Ports the simulated services listen on.
const (
	PortBroker = 4222
	PortShop   = 8080
)

// Roles of simulated pods.
const (
	RoleBroker   = "nats"
	RoleFrontend = "frontend"
	RoleShop     = "shop"
)

// PodUIDPrefix starts every simulated pod's uid, so a test can tell the
// demo's pods from a real node's.
const PodUIDPrefix = "5e1f0000-0000-4000-8000-"

// Namespace is the simulated pods' namespace.
const Namespace = "shop"

// Timing of the simulated cluster; Options overrides the intervals.
const (
	restartBackoff = 500 * time.Millisecond // crash to new container
	probeLasts     = 15 * time.Millisecond
	minCall        = 2 * time.Millisecond
	longSendRate   = 512  // bytes/s an app sends on its broker connection
	longRecvRate   = 2048 // bytes/s it receives
)

// Options shape a Generator.
type Options struct {
	// Nodes and Pods are how many nodes, and pods per node (one broker,
	// the rest app pods; at least 2).
	Nodes, Pods int
	// CallsPerSecond is the rate of short calls (each is four events).
	CallsPerSecond float64
	// RestartEvery is how often an app pod's process crashes and is
	// restarted; ProbeEvery how often a pod runs an exec probe. Zero
	// turns either off.
	RestartEvery, ProbeEvery time.Duration
}

type simPod struct {
	node     int
	index    int
	role     string
	pod      *schema.Pod
	ip       netip.Addr
	restarts int
	gen      int      // pods this one replaced (deleted, then made anew)
	pending  bool     // deleted, its replacement not started yet
	proc     *simProc // the running main process; nil between crash and restart
	long     *simConn // the open broker connection of an app pod
}

type simProc struct {
	pid, ppid uint32
	exe, comm string
	argv      []string
	cgroup    uint64
	container string
	started   time.Time
}

type simConn struct {
	client, server *simPod
	cproc, sproc   *simProc
	port, sport    uint32
	ccookie        uint64
	scookie        uint64
	start          time.Time
	sent, recv     uint64 // client's view; fixed for a short call
	closed         bool
}

type simNode struct {
	name    string
	pods    []*simPod
	shops   []*simPod
	nextPID uint32
	nextEph uint32
}

// Generator produces the events of the simulated cluster as time passes.
// It is not safe for concurrent use; Truth may be called concurrently with
// Step.
type Generator struct {
	opt     Options
	nodes   []*simNode
	apps    []*simPod
	started bool
	t0      time.Time
	calls   int64 // short calls started
	cookie  uint64
	cgroup  uint64
	due     dueQueue
	open    map[*simConn]struct{}
	probes  map[*simProc]*simPod // probe processes running
	restart int                  // next app pod to crash, round robin
	probe   int
	out     []Published

	mu    sync.Mutex
	truth Truth
}

// NewGenerator simulates opt.Nodes nodes of opt.Pods pods. Node names are
// node, or node-0…node-(n-1) when there are several.
func NewGenerator(node string, opt Options) *Generator {
	g := &Generator{opt: opt, truth: Truth{Edges: []TruthEdge{}}, open: map[*simConn]struct{}{}, probes: map[*simProc]*simPod{}}
	for n := range opt.Nodes {
		name := node
		if opt.Nodes > 1 {
			name = node + "-" + strconv.Itoa(n)
		}
		sn := &simNode{name: name, nextPID: 3000, nextEph: 32768}
		for i := range opt.Pods {
			ip := netip.AddrFrom4([4]byte{10, 244, byte(n), byte(i + 2)})
			sp := &simPod{node: n, index: i, ip: ip, role: RoleBroker}
			var owner *schema.OwnerRef
			name := fmt.Sprintf("%s-%d", RoleBroker, n)
			uid := podUID(n, i, 0)
			switch {
			case i == 0:
				owner = &schema.OwnerRef{Kind: "StatefulSet", Name: RoleBroker, Uid: "5e1f0000-0000-4000-9000-000000000001", Controller: true}
			default:
				sp.role = RoleFrontend
				if i%2 == 0 {
					sp.role = RoleShop
				}
				rs := replicaSet(sp.role)
				name = rs + "-" + podSuffix(n, i, 0)
				owner = &schema.OwnerRef{Kind: "ReplicaSet", Name: rs, Uid: "5e1f0000-0000-4000-9000-" + fmt.Sprintf("%012x", len(sp.role)), Controller: true}
				g.apps = append(g.apps, sp)
			}
			labels := map[string]string{"app.kubernetes.io/name": sp.role}
			if sp.role != RoleBroker {
				labels["pod-template-hash"] = podTemplateHash(sp.role)
			}
			sp.pod = &schema.Pod{
				Uid: uid, Name: name, Namespace: Namespace, Node: sn.name,
				Ips: []string{ip.String()}, Labels: labels, Owners: []*schema.OwnerRef{owner},
				// The top controller, as the metadata provider resolves it
				// on a real cluster: a ReplicaSet's Deployment.
				Workload: owner,
			}
			if d := Deployment(sp.role); d != "" {
				sp.pod.Workload = &schema.OwnerRef{Kind: "Deployment", Name: d, Uid: "5e1f0000-0000-4000-9001-" + fmt.Sprintf("%012x", len(sp.role)), Controller: true}
			}
			sn.pods = append(sn.pods, sp)
			if sp.role == RoleShop {
				sn.shops = append(sn.shops, sp)
			}
		}
		g.nodes = append(g.nodes, sn)
	}
	return g
}

// podTemplateHash is the hash Kubernetes puts in a ReplicaSet's name.
func podTemplateHash(role string) string {
	if role == RoleFrontend {
		return "6b7c9d5f4"
	}
	return "7d9f5c6b8"
}

// replicaSet is the name of role's current ReplicaSet.
func replicaSet(role string) string { return role + "-" + podTemplateHash(role) }

// Deployment is the Deployment that owns role's ReplicaSet ("" for the
// broker, a StatefulSet's pod).
func Deployment(role string) string {
	if role == RoleBroker {
		return ""
	}
	return role
}

// podUID is the uid of the gen-th pod in slot i of node n.
func podUID(n, i, gen int) string { return fmt.Sprintf("%s%04x%08x", PodUIDPrefix, n, gen<<16|i) }

// podSuffix is the five characters Kubernetes appends to a ReplicaSet's
// pod names (from its alphabet without vowels), for the gen-th pod in slot
// i of node n.
func podSuffix(n, i, gen int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	v := uint32(n*7919+i*104729+gen*15485863) * 2654435761
	b := make([]byte, 5)
	for k := range b {
		b[k] = alphabet[v%uint32(len(alphabet))]
		v /= uint32(len(alphabet))
		v ^= uint32(i + k)
	}
	return string(b)
}

func (g *Generator) emit(node string, kind string, e *schema.Event) {
	g.out = append(g.out, Published{Node: node, Subject: schema.EventSubject(node, kind), Event: e})
}

func (g *Generator) task(p *simPod, pr *simProc) *schema.Task {
	return &schema.Task{
		Pid: pr.pid, Tid: pr.pid, Ppid: pr.ppid, Comm: pr.comm, Exe: pr.exe, CgroupId: pr.cgroup,
		ContainerId: pr.container, PodUid: p.pod.GetUid(), Attribution: schema.Attribution_ATTRIBUTION_POD,
	}
}

// startContainer starts p's container (again, after a crash): a new
// container id, the pod announced with it, its process exec'd and, for an
// app, its broker connection opened.
func (g *Generator) startContainer(p *simPod, now time.Time) {
	n := g.nodes[p.node]
	exe, args := "/app/"+p.role, []string{"/app/" + p.role, "--listen", ":" + strconv.Itoa(PortShop)}
	image := "ghcr.io/weft-demo/" + p.role + ":1.4.2"
	if p.role == RoleBroker {
		exe, args, image = "/nats-server", []string{"/nats-server", "--jetstream", "--port", strconv.Itoa(PortBroker)}, "nats:2.10.22"
	}
	g.cgroup++
	n.nextPID += 7
	pr := &simProc{
		pid: n.nextPID, ppid: n.nextPID - 3, exe: exe, comm: p.role, argv: args, cgroup: 0x5e1f0000 + g.cgroup,
		container: fmt.Sprintf("%016x%048x", g.cgroup, uint64(p.node)<<32|uint64(p.index)<<8|uint64(p.restarts)),
		started:   now,
	}
	p.proc = pr
	g.mu.Lock()
	p.pending = false
	g.mu.Unlock()
	p.pod.Containers = []*schema.Container{{Id: pr.container, Name: p.role, Image: image}}
	g.emit(n.name, schema.KindPod, &schema.Event{TimeUnixNano: ns(now),
		Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: clonePod(p.pod)}}})
	g.emit(n.name, schema.KindProcess, &schema.Event{TimeUnixNano: ns(now), Task: g.task(p, pr),
		Body: &schema.Event_Exec{Exec: &schema.ProcessExec{Argv: args}}})
	g.mu.Lock()
	g.truth.Execs++
	g.truth.Containers++
	g.mu.Unlock()
	if p.role != RoleBroker {
		broker := n.pods[0]
		if broker.proc != nil {
			p.long = g.connect(p, broker, PortBroker, now, 0, 0)
		}
	}
}

// clonePod copies p: the event keeps the pod as it was when published.
func clonePod(p *schema.Pod) *schema.Pod { return proto.Clone(p).(*schema.Pod) }

// connect opens a connection: the client's connect and the server's accept.
func (g *Generator) connect(client, server *simPod, port uint32, now time.Time, sent, recv uint64) *simConn {
	n := g.nodes[client.node]
	n.nextEph++
	if n.nextEph > 60999 {
		n.nextEph = 32768
	}
	g.cookie += 2
	c := &simConn{client: client, server: server, cproc: client.proc, sproc: server.proc, port: port, sport: n.nextEph,
		ccookie: g.cookie, scookie: g.cookie + 1, start: now, sent: sent, recv: recv}
	g.emitTCP(c, schema.Role_ROLE_CLIENT, schema.TCPPhase_TCP_PHASE_CONNECT, now)
	g.emitTCP(c, schema.Role_ROLE_SERVER, schema.TCPPhase_TCP_PHASE_ACCEPT, now)
	g.open[c] = struct{}{}
	g.mu.Lock()
	g.truth.Open++
	g.mu.Unlock()
	return c
}

// close closes c from both sides with its totals and records it in the
// ground truth; closing a closed connection does nothing.
func (g *Generator) close(c *simConn, now time.Time) {
	if c.closed {
		return
	}
	c.closed = true
	delete(g.open, c)
	g.emitTCP(c, schema.Role_ROLE_CLIENT, schema.TCPPhase_TCP_PHASE_CLOSE, now)
	g.emitTCP(c, schema.Role_ROLE_SERVER, schema.TCPPhase_TCP_PHASE_CLOSE, now)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.truth.Open--
	g.truth.addEdge(c)
}

func (g *Generator) emitTCP(c *simConn, role schema.Role, phase schema.TCPPhase, now time.Time) {
	who, pr := c.client, c.cproc
	ev := &schema.TCPEvent{Role: role, Phase: phase, StartUnixNano: ns(c.start)}
	if role == schema.Role_ROLE_CLIENT {
		ev.LocalAddr, ev.LocalPort, ev.RemoteAddr, ev.RemotePort = c.client.ip.AsSlice(), c.sport, c.server.ip.AsSlice(), c.port
		ev.SockCookie = c.ccookie
	} else {
		who, pr = c.server, c.sproc
		ev.LocalAddr, ev.LocalPort, ev.RemoteAddr, ev.RemotePort = c.server.ip.AsSlice(), c.port, c.client.ip.AsSlice(), c.sport
		ev.SockCookie = c.scookie
	}
	if phase == schema.TCPPhase_TCP_PHASE_CLOSE {
		ev.DurationNs = uint64(now.Sub(c.start))
		ev.BytesSent, ev.BytesReceived = c.sent, c.recv
		if role == schema.Role_ROLE_SERVER {
			ev.BytesSent, ev.BytesReceived = c.recv, c.sent
		}
	}
	g.emit(g.nodes[who.node].name, schema.KindTCP, &schema.Event{TimeUnixNano: ns(now), Task: g.task(who, pr), Body: &schema.Event_Tcp{Tcp: ev}})
}

// crash ends p's process (exit code 1) and with it its broker connection;
// the kubelet starts a new container after restartBackoff.
func (g *Generator) crash(p *simPod, now time.Time) {
	if p.proc == nil {
		return
	}
	if c := p.long; c != nil {
		elapsed := now.Sub(c.start).Seconds()
		c.sent, c.recv = uint64(elapsed*longSendRate), uint64(elapsed*longRecvRate)
		p.long = nil
	}
	g.closeOf(p.proc, now)
	g.exit(p, p.proc, 1, now)
	p.proc = nil
	p.restarts++
	g.mu.Lock()
	g.truth.Restarts++
	g.mu.Unlock()
	g.at(now.Add(restartBackoff), func(now time.Time) { g.startContainer(p, now) })
}

// replace deletes p's pod, as a rollout or an eviction does: its process
// exits 0 (it honours SIGTERM) and with it its connections, then the node
// announces the delete; after restartBackoff the ReplicaSet's new pod in
// its place (new uid, name and container; the freed IP again) starts.
func (g *Generator) replace(p *simPod, now time.Time) {
	if p.proc == nil {
		return
	}
	if c := p.long; c != nil {
		elapsed := now.Sub(c.start).Seconds()
		c.sent, c.recv = uint64(elapsed*longSendRate), uint64(elapsed*longRecvRate)
		p.long = nil
	}
	g.closeOf(p.proc, now)
	g.exit(p, p.proc, 0, now)
	p.proc = nil
	n := g.nodes[p.node]
	old := clonePod(p.pod)
	g.emit(n.name, schema.KindPod, &schema.Event{TimeUnixNano: ns(now),
		Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_DELETE, Pod: old}}})
	p.gen++
	p.restarts++
	g.mu.Lock() // Truth reads the pod's identity
	p.pod.Uid = podUID(p.node, p.index, p.gen)
	p.pod.Name = replicaSet(p.role) + "-" + podSuffix(p.node, p.index, p.gen)
	p.pod.Containers = nil
	ended := truthPod(n.name, p, old)
	ended.EndedAt = int64(ns(now))
	g.truth.ended = append(g.truth.ended, ended)
	g.truth.Restarts++
	g.truth.Replaced++
	p.pending = true
	g.mu.Unlock()
	g.at(now.Add(restartBackoff), func(now time.Time) { g.startContainer(p, now) })
}

// closeOf closes pr's connections, as the kernel does when a process
// dies: its calls in flight end now, with what they had exchanged (here,
// their totals).
func (g *Generator) closeOf(pr *simProc, now time.Time) {
	var ending []*simConn
	for c := range g.open {
		if c.cproc == pr || c.sproc == pr {
			ending = append(ending, c)
		}
	}
	slices.SortFunc(ending, func(a, b *simConn) int { return int(a.ccookie) - int(b.ccookie) })
	for _, c := range ending {
		g.close(c, now)
	}
}

func (g *Generator) exit(p *simPod, pr *simProc, code int32, now time.Time) {
	g.emit(g.nodes[p.node].name, schema.KindProcess, &schema.Event{TimeUnixNano: ns(now), Task: g.task(p, pr),
		Body: &schema.Event_Exit{Exit: &schema.ProcessExit{ExitCode: code, LifetimeNs: uint64(now.Sub(pr.started))}}})
	g.mu.Lock()
	g.truth.Exits++
	g.mu.Unlock()
}

// runProbe runs an exec probe in p: a shell exec'd in its container, which
// exits 0 shortly after.
func (g *Generator) runProbe(p *simPod, now time.Time) {
	if p.proc == nil {
		return
	}
	n := g.nodes[p.node]
	n.nextPID += 3
	main := p.proc
	pr := &simProc{pid: n.nextPID, ppid: main.ppid, exe: "/bin/sh", comm: "sh", cgroup: main.cgroup, container: main.container, started: now,
		argv: []string{"/bin/sh", "-c", "wget -qO- http://127.0.0.1:" + strconv.Itoa(PortShop) + "/healthz"}}
	g.emit(n.name, schema.KindProcess, &schema.Event{TimeUnixNano: ns(now), Task: g.task(p, pr),
		Body: &schema.Event_Exec{Exec: &schema.ProcessExec{Argv: pr.argv}}})
	g.mu.Lock()
	g.truth.Execs++
	g.mu.Unlock()
	g.probes[pr] = p
	g.at(now.Add(probeLasts), func(now time.Time) {
		if g.probes[pr] != nil {
			delete(g.probes, pr)
			g.exit(p, pr, 0, now)
		}
	})
}

// shortCall starts the i-th short call: frontend → shop, shop → broker.
func (g *Generator) shortCall(i int64, now time.Time) {
	if len(g.apps) == 0 {
		return
	}
	client := g.apps[int(i)%len(g.apps)]
	server, port := g.nodes[client.node].pods[0], uint32(PortBroker)
	if client.role == RoleFrontend {
		shops := g.nodes[client.node].shops
		if len(shops) == 0 {
			return // a node of one app pod: nothing to call but the broker
		}
		server, port = shops[int(i/int64(len(g.apps)))%len(shops)], PortShop
	}
	if client.proc == nil || server.proc == nil || client == server {
		return // restarting: the call is not made
	}
	c := g.connect(client, server, port, now, 180+uint64(i%64)*16, 1200+uint64(i%128)*32)
	d := minCall + time.Duration(i%28)*time.Millisecond
	g.at(now.Add(d), func(now time.Time) { g.close(c, now) })
}

// Step returns the events due at now (a wall-clock time not before the
// previous call's). The slice is reused by the next call.
func (g *Generator) Step(now time.Time) []Published {
	g.out = g.out[:0]
	if !g.started {
		g.started, g.t0 = true, now
		for _, n := range g.nodes {
			for _, p := range n.pods { // the broker first: apps connect to it
				g.startContainer(p, now)
			}
		}
		if g.opt.RestartEvery > 0 {
			g.every(now.Add(g.opt.RestartEvery), g.opt.RestartEvery, func(now time.Time) {
				if len(g.apps) > 0 {
					if p := g.apps[g.restart%len(g.apps)]; g.restart%2 == 0 {
						g.crash(p, now)
					} else {
						g.replace(p, now)
					}
					g.restart++
				}
			})
		}
		if g.opt.ProbeEvery > 0 {
			g.every(now.Add(g.opt.ProbeEvery), g.opt.ProbeEvery, func(now time.Time) {
				if len(g.apps) > 0 {
					g.runProbe(g.apps[g.probe%len(g.apps)], now)
					g.probe++
				}
			})
		}
	}
	// Due actions and new calls in time order, each at its own time.
	want := int64(now.Sub(g.t0).Seconds() * g.opt.CallsPerSecond)
	for {
		var next time.Time
		if g.calls < want && g.opt.CallsPerSecond > 0 {
			next = g.t0.Add(time.Duration(float64(g.calls) / g.opt.CallsPerSecond * float64(time.Second)))
		}
		if len(g.due) > 0 && !g.due[0].at.After(now) && (next.IsZero() || g.due[0].at.Before(next)) {
			d := heap.Pop(&g.due).(*dueAction)
			d.do(d.at)
			continue
		}
		if next.IsZero() {
			break
		}
		g.shortCall(g.calls, next)
		g.calls++
	}
	return g.out
}

// Stop ends the simulated cluster at now, as a drained node does: every
// connection closes with its totals and every process exits (code 0,
// pods stay). It returns those events; Step must not be called after.
func (g *Generator) Stop(now time.Time) []Published {
	g.out = g.out[:0]
	probes := slices.SortedFunc(maps.Keys(g.probes), func(a, b *simProc) int { return int(a.pid) - int(b.pid) })
	for _, pr := range probes {
		g.exit(g.probes[pr], pr, 0, now)
		delete(g.probes, pr)
	}
	for _, n := range g.nodes {
		for i := len(n.pods) - 1; i >= 0; i-- { // apps first, the broker last
			p := n.pods[i]
			if p.proc == nil {
				continue
			}
			if c := p.long; c != nil {
				elapsed := now.Sub(c.start).Seconds()
				c.sent, c.recv = uint64(elapsed*longSendRate), uint64(elapsed*longRecvRate)
				p.long = nil
			}
			g.closeOf(p.proc, now)
			g.exit(p, p.proc, 0, now)
			p.proc = nil
		}
	}
	return g.out
}

// ShortCallsStarted is how many short calls Step has started.
func (g *Generator) ShortCallsStarted() int64 { return g.calls }

func (g *Generator) at(t time.Time, do func(time.Time)) { heap.Push(&g.due, &dueAction{at: t, do: do}) }

func (g *Generator) every(first time.Time, period time.Duration, do func(time.Time)) {
	var tick func(time.Time)
	tick = func(now time.Time) {
		do(now)
		g.at(now.Add(period), tick)
	}
	g.at(first, tick)
}

func ns(t time.Time) uint64 { return uint64(t.UnixNano()) }

type dueAction struct {
	at time.Time
	do func(time.Time)
}

// dueQueue is a min-heap of actions by time.
type dueQueue []*dueAction

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(*dueAction)) }
func (q *dueQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Truth is what the simulated cluster did, as a correct pipeline must show
// it: its pods and workloads, and per edge (client pod → server pod, port)
// the connections closed so far with their bytes. It is what
// GET /api/v1/demo/truth serves.
type Truth struct {
	// Pods are the pods running, then the pods deleted (ended).
	Pods []TruthPod `json:"pods"`
	// Edges are the closed connections per pod-level edge.
	Edges []TruthEdge `json:"edges"`
	// Open is how many connections are open (the apps' broker
	// connections, calls in flight): they are in Edges once closed.
	Open int `json:"open"`
	// Execs and Exits count process events (the log signal); Containers
	// the containers started; Restarts the containers started again (a
	// crash, or a pod deleted and replaced), Replaced the pods deleted
	// and replaced.
	Execs      int `json:"execs"`
	Exits      int `json:"exits"`
	Containers int `json:"containers"`
	Restarts   int `json:"restarts"`
	Replaced   int `json:"replaced"`
	// Events is how many events were published.
	Events int64 `json:"events"`

	ended []TruthPod // the pods deleted, in order
}

// TruthPod is one simulated pod.
type TruthPod struct {
	UID        string `json:"uid"`
	Name       string `json:"name"`
	Node       string `json:"node"`
	IP         string `json:"ip"`
	Role       string `json:"role"`
	Owner      string `json:"owner"`      // kind/name of its owner reference
	Deployment string `json:"deployment"` // its ReplicaSet's Deployment ("" for the broker)
	// EndedAt is when a deleted pod was deleted (Unix nanoseconds, the
	// graph's ended_at); 0 for a pod running.
	EndedAt int64 `json:"ended_at,omitempty"`
}

// truthPod is pod (p's, now or before it was replaced) in the truth.
func truthPod(node string, p *simPod, pod *schema.Pod) TruthPod {
	o := pod.GetOwners()[0]
	return TruthPod{UID: pod.GetUid(), Name: pod.GetName(), Node: node, IP: p.ip.String(),
		Role: p.role, Owner: o.GetKind() + "/" + o.GetName(), Deployment: Deployment(p.role)}
}

// TruthEdge is one pod-level edge.
type TruthEdge struct {
	Client        string `json:"client"` // pod name
	Server        string `json:"server"`
	Port          uint32 `json:"port"`
	Count         uint64 `json:"count"`
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
}

func (t *Truth) addEdge(c *simConn) {
	for i := range t.Edges {
		e := &t.Edges[i]
		if e.Client == c.client.pod.Name && e.Server == c.server.pod.Name && e.Port == c.port {
			e.Count++
			e.BytesSent += c.sent
			e.BytesReceived += c.recv
			return
		}
	}
	t.Edges = append(t.Edges, TruthEdge{Client: c.client.pod.Name, Server: c.server.pod.Name, Port: c.port, Count: 1, BytesSent: c.sent, BytesReceived: c.recv})
}

// Truth returns a copy of the ground truth of what Step returned so far.
// Safe to call concurrently with Step.
func (g *Generator) Truth() Truth {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.truth
	t.Edges = slices.Clone(g.truth.Edges)
	t.Pods = nil
	for _, n := range g.nodes {
		for _, p := range n.pods {
			if !p.pending {
				t.Pods = append(t.Pods, truthPod(n.name, p, p.pod))
			}
		}
	}
	t.Pods = append(t.Pods, g.truth.ended...)
	t.ended = nil
	return t
}

// Published is one generated event, its subject, and the simulated node
// whose collector publishes it.
type Published struct {
	Node    string
	Subject string
	Event   *schema.Event
}

// NodeNames are the simulated nodes' names.
func (g *Generator) NodeNames() []string {
	var out []string
	for _, n := range g.nodes {
		out = append(out, n.name)
	}
	return out
}
