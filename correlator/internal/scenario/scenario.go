// Package scenario builds the EventBatches a node's collector emits for
// known traffic (pods, TCP and unix-socket connections), together with the
// ground truth the correlator and the graph must reproduce. Tests and
// benchmarks use it; it mirrors the collector's event shapes: CONNECT on the
// client when established, ACCEPT on the server, CLOSE on each side with
// the totals, CONNECT_FAILED for a refused dial, a CONNECT per unix-socket
// connection naming both ends, and PodEvents announcing pods.
package scenario

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/weftobs/weft/streams/schema"
)

// Proc is a process somewhere: in a pod's container or on a host.
type Proc struct {
	Node      string
	Pod       *schema.Pod
	Container *schema.Container
	Pid       uint32
	Exe       string
}

// Task is the Task the collector attributes Proc with.
func (p Proc) Task() *schema.Task {
	t := &schema.Task{Pid: p.Pid, Tid: p.Pid, Exe: p.Exe, Comm: comm(p.Exe), Attribution: schema.Attribution_ATTRIBUTION_HOST}
	if p.Container != nil {
		t.ContainerId = p.Container.GetId()
		t.Attribution = schema.Attribution_ATTRIBUTION_CONTAINER
	}
	if p.Pod != nil {
		t.PodUid = p.Pod.GetUid()
		t.Attribution = schema.Attribution_ATTRIBUTION_POD
	}
	return t
}

func comm(exe string) string {
	for i := len(exe) - 1; i >= 0; i-- {
		if exe[i] == '/' {
			exe = exe[i+1:]
			break
		}
	}
	if len(exe) > 15 {
		exe = exe[:15]
	}
	return exe
}

// Key identifies a pod-level edge of the ground truth.
type Key struct {
	From, To  string // pod uid, or "ext:"+address, or "proc:"+node+":"+exe
	Transport schema.Transport
	Port      uint32
	Path      string
}

// Totals are what one edge must add up to.
type Totals struct {
	Count, Sent, Received, Errors uint64
}

// Compare reports every pod-level edge where got differs from want: one
// missing, one with other totals, one not expected. Nil when they agree.
func Compare(want, got map[Key]*Totals) error {
	var errs []error
	for k, w := range want {
		if g := got[k]; g == nil {
			errs = append(errs, fmt.Errorf("edge %+v missing (want %+v)", k, *w))
		} else if *g != *w {
			errs = append(errs, fmt.Errorf("edge %+v: got %+v, want %+v", k, *g, *w))
		}
	}
	for k, g := range got {
		if want[k] == nil {
			errs = append(errs, fmt.Errorf("unexpected edge %+v: %+v", k, *g))
		}
	}
	return errors.Join(errs...)
}

// Sim accumulates one or more nodes' events and the ground truth.
type Sim struct {
	events map[string][]*schema.Event
	cookie uint64
	seqs   map[string]uint64 // the last batch sequence Drain gave each node
	Truth  map[Key]*Totals
}

// New returns an empty simulation.
func New() *Sim {
	return &Sim{events: map[string][]*schema.Event{}, cookie: 1000, Truth: map[Key]*Totals{}}
}

func (s *Sim) add(node string, ev *schema.Event) { s.events[node] = append(s.events[node], ev) }

// PodUp announces p on its node at time t.
func (s *Sim) PodUp(t uint64, p *schema.Pod) {
	s.add(p.GetNode(), &schema.Event{TimeUnixNano: t, Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: p}}})
}

// PodDown announces p's deletion at time t.
func (s *Sim) PodDown(t uint64, p *schema.Pod) {
	s.add(p.GetNode(), &schema.Event{TimeUnixNano: t, Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_DELETE, Pod: p}}})
}

// Conn is one TCP connection.
type Conn struct {
	Client, Server Proc
	ClientAddr     netip.AddrPort // the client's own address and ephemeral port
	ServerAddr     netip.AddrPort // the server's own listening address
	Dialed         netip.AddrPort // what the client connected to; zero: ServerAddr
	Start, Dur     uint64
	Sent, Received uint64 // client → server, server → client
	// NoClient / NoServer: that side's node is not instrumented.
	NoClient, NoServer bool
	// ServerTruth overrides the truth's To (for a peer weft cannot see).
	ServerTruth string
}

func (s *Sim) next() uint64 { s.cookie++; return s.cookie }

func addr(ap netip.AddrPort) []byte { return ap.Addr().AsSlice() }

// TCP adds a connection's events and its truth.
func (s *Sim) TCP(c Conn) {
	dialed := c.Dialed
	if !dialed.IsValid() {
		dialed = c.ServerAddr
	}
	end := c.Start + c.Dur
	if !c.NoClient {
		ck := s.next()
		ev := func(t uint64, ph schema.TCPPhase, fill func(*schema.TCPEvent)) {
			e := &schema.TCPEvent{Phase: ph, Role: schema.Role_ROLE_CLIENT,
				LocalAddr: addr(c.ClientAddr), LocalPort: uint32(c.ClientAddr.Port()),
				RemoteAddr: addr(dialed), RemotePort: uint32(dialed.Port()),
				SockCookie: ck, StartUnixNano: c.Start, NetNs: 4026531840}
			if fill != nil {
				fill(e)
			}
			s.add(c.Client.Node, &schema.Event{TimeUnixNano: t, Task: c.Client.Task(), Body: &schema.Event_Tcp{Tcp: e}})
		}
		ev(c.Start, schema.TCPPhase_TCP_PHASE_CONNECT, nil)
		ev(end, schema.TCPPhase_TCP_PHASE_CLOSE, func(e *schema.TCPEvent) {
			e.BytesSent, e.BytesReceived, e.DurationNs = c.Sent, c.Received, c.Dur
		})
	}
	if !c.NoServer {
		sk := s.next()
		ev := func(t uint64, ph schema.TCPPhase, fill func(*schema.TCPEvent)) {
			e := &schema.TCPEvent{Phase: ph, Role: schema.Role_ROLE_SERVER,
				LocalAddr: addr(c.ServerAddr), LocalPort: uint32(c.ServerAddr.Port()),
				RemoteAddr: addr(c.ClientAddr), RemotePort: uint32(c.ClientAddr.Port()),
				SockCookie: sk, StartUnixNano: c.Start + 40_000, NetNs: 4026531841}
			if fill != nil {
				fill(e)
			}
			s.add(c.Server.Node, &schema.Event{TimeUnixNano: t, Task: c.Server.Task(), Body: &schema.Event_Tcp{Tcp: e}})
		}
		ev(c.Start+40_000, schema.TCPPhase_TCP_PHASE_ACCEPT, nil)
		ev(end+30_000, schema.TCPPhase_TCP_PHASE_CLOSE, func(e *schema.TCPEvent) {
			e.BytesSent, e.BytesReceived, e.DurationNs = c.Received, c.Sent, c.Dur-10_000
		})
	}
	to := c.ServerTruth
	if to == "" {
		to = ident(c.Server)
	}
	s.truth(Key{From: ident(c.Client), To: to, Transport: schema.Transport_TRANSPORT_TCP, Port: uint32(c.ServerAddr.Port())}, c.Sent, c.Received, 0)
}

// Long is a TCP connection held open, as the collector reports one: its
// connect/accept by the sweep (OpenAfter after its start), a progress
// event per side every Every while its totals changed, each carrying the
// totals of the side's previous one, and its close (open reported).
type Long struct {
	Conn
	OpenAfter, Every uint64
	// Traffic is what the client sends and receives in each Every.
	Traffic func(i int) (sent, received uint64)
}

// LongTCP adds a long connection's events and its truth. The server's
// events come Skew after the client's (another node's sweep).
func (s *Sim) LongTCP(l Long, skew uint64) {
	c := l.Conn
	dialed := c.Dialed
	if !dialed.IsValid() {
		dialed = c.ServerAddr
	}
	end := c.Start + c.Dur
	type sideDef struct {
		p            Proc
		role         schema.Role
		local, rem   netip.AddrPort
		start, delay uint64
		flip         bool
		skip         bool
	}
	for _, d := range []sideDef{
		{c.Client, schema.Role_ROLE_CLIENT, c.ClientAddr, dialed, c.Start, 0, false, c.NoClient},
		{c.Server, schema.Role_ROLE_SERVER, c.ServerAddr, c.ClientAddr, c.Start + 40_000, skew, true, c.NoServer},
	} {
		if d.skip {
			continue
		}
		ck := s.next()
		ev := func(t uint64, ph schema.TCPPhase, fill func(*schema.TCPEvent)) {
			e := &schema.TCPEvent{Phase: ph, Role: d.role,
				LocalAddr: addr(d.local), LocalPort: uint32(d.local.Port()),
				RemoteAddr: addr(d.rem), RemotePort: uint32(d.rem.Port()),
				SockCookie: ck, StartUnixNano: d.start, NetNs: 4026531840}
			if fill != nil {
				fill(e)
			}
			s.add(d.p.Node, &schema.Event{TimeUnixNano: t, Task: d.p.Task(), Body: &schema.Event_Tcp{Tcp: e}})
		}
		open := schema.TCPPhase_TCP_PHASE_CONNECT
		if d.role == schema.Role_ROLE_SERVER {
			open = schema.TCPPhase_TCP_PHASE_ACCEPT
		}
		ev(d.start+l.OpenAfter+d.delay, open, func(e *schema.TCPEvent) { e.StillOpen = true })
		var tot, prior [2]uint64
		for i, t := 0, c.Start+l.Every; t < end; i, t = i+1, t+l.Every {
			a, b := l.Traffic(i)
			if d.flip {
				a, b = b, a
			}
			tot[0], tot[1] = tot[0]+a, tot[1]+b
			if tot == prior {
				continue
			}
			p := prior
			cur := tot
			ev(t+d.delay, schema.TCPPhase_TCP_PHASE_PROGRESS, func(e *schema.TCPEvent) {
				e.BytesSent, e.BytesReceived = cur[0], cur[1]
				e.PriorBytesSent, e.PriorBytesReceived = p[0], p[1]
				e.OpenReported = true
			})
			prior = tot
		}
		fin := [2]uint64{c.Sent, c.Received}
		if d.flip {
			fin[0], fin[1] = fin[1], fin[0]
		}
		p := prior
		ev(end+d.delay, schema.TCPPhase_TCP_PHASE_CLOSE, func(e *schema.TCPEvent) {
			e.BytesSent, e.BytesReceived, e.DurationNs = fin[0], fin[1], c.Dur
			e.PriorBytesSent, e.PriorBytesReceived = p[0], p[1]
			e.OpenReported = true
		})
	}
	to := c.ServerTruth
	if to == "" {
		to = ident(c.Server)
	}
	s.truth(Key{From: ident(c.Client), To: to, Transport: schema.Transport_TRANSPORT_TCP, Port: uint32(c.ServerAddr.Port())}, c.Sent, c.Received, 0)
}

// Open is a connection OpenTCP reported open: its progress goes on from
// here, both sides, each with the totals of its previous one.
type Open struct {
	s              *Sim
	c              Conn
	ck, sk         uint64
	sent, received uint64
	dialed         netip.AddrPort
}

// OpenTCP adds the connect and accept of a connection still open, as the
// collector's sweep reports them, at time t; no truth (it is not over).
func (s *Sim) OpenTCP(c Conn, t uint64) *Open {
	o := &Open{s: s, c: c, ck: s.next(), sk: s.next(), dialed: c.Dialed}
	if !o.dialed.IsValid() {
		o.dialed = c.ServerAddr
	}
	o.ev(t, schema.TCPPhase_TCP_PHASE_CONNECT, schema.TCPPhase_TCP_PHASE_ACCEPT, nil)
	return o
}

func (o *Open) ev(t uint64, cph, sph schema.TCPPhase, fill func(e *schema.TCPEvent, client bool)) {
	c := o.c
	cli := &schema.TCPEvent{Phase: cph, Role: schema.Role_ROLE_CLIENT, StillOpen: true,
		LocalAddr: addr(c.ClientAddr), LocalPort: uint32(c.ClientAddr.Port()), RemoteAddr: addr(o.dialed), RemotePort: uint32(o.dialed.Port()),
		SockCookie: o.ck, StartUnixNano: c.Start, NetNs: 4026531840}
	srv := &schema.TCPEvent{Phase: sph, Role: schema.Role_ROLE_SERVER, StillOpen: true,
		LocalAddr: addr(c.ServerAddr), LocalPort: uint32(c.ServerAddr.Port()), RemoteAddr: addr(c.ClientAddr), RemotePort: uint32(c.ClientAddr.Port()),
		SockCookie: o.sk, StartUnixNano: c.Start + 40_000, NetNs: 4026531841}
	if fill != nil {
		fill(cli, true)
		fill(srv, false)
	}
	o.s.add(c.Client.Node, &schema.Event{TimeUnixNano: t, Task: c.Client.Task(), Body: &schema.Event_Tcp{Tcp: cli}})
	o.s.add(c.Server.Node, &schema.Event{TimeUnixNano: t, Task: c.Server.Task(), Body: &schema.Event_Tcp{Tcp: srv}})
}

// Progress adds both sides' progress at t: sent and received more bytes.
func (o *Open) Progress(t, sent, received uint64) {
	ps, pr := o.sent, o.received
	o.sent, o.received = o.sent+sent, o.received+received
	o.ev(t, schema.TCPPhase_TCP_PHASE_PROGRESS, schema.TCPPhase_TCP_PHASE_PROGRESS, func(e *schema.TCPEvent, client bool) {
		e.OpenReported, e.StillOpen = true, false
		e.BytesSent, e.BytesReceived, e.PriorBytesSent, e.PriorBytesReceived = o.sent, o.received, ps, pr
		if !client {
			e.BytesSent, e.BytesReceived, e.PriorBytesSent, e.PriorBytesReceived = o.received, o.sent, pr, ps
		}
	})
}

// Failed adds a refused connect from client to dialed.
func (s *Sim) Failed(client Proc, from, dialed netip.AddrPort, t uint64, errno int32, truthTo string) {
	e := &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CONNECT_FAILED, Role: schema.Role_ROLE_CLIENT,
		LocalAddr: addr(from), LocalPort: uint32(from.Port()), RemoteAddr: addr(dialed), RemotePort: uint32(dialed.Port()),
		SockCookie: s.next(), StartUnixNano: t, Errno: errno}
	s.add(client.Node, &schema.Event{TimeUnixNano: t, Task: client.Task(), Body: &schema.Event_Tcp{Tcp: e}})
	s.truth(Key{From: ident(client), To: truthTo, Transport: schema.Transport_TRANSPORT_TCP, Port: uint32(dialed.Port())}, 0, 0, 1)
}

// Unix adds a unix-socket connection between two processes on one node:
// as the collector sees it, one CONNECT from the client naming the
// server (whoever listen()ed) — the kernel has no unix close hook
// without syscall tracepoints, so there are no byte totals.
func (s *Sim) Unix(client, server Proc, path string, start uint64) {
	ck, lk := s.next(), s.next()
	s.add(client.Node, &schema.Event{TimeUnixNano: start, Task: client.Task(), Body: &schema.Event_Unix{Unix: &schema.UnixEvent{
		Phase: schema.UnixPhase_UNIX_PHASE_CONNECT, Role: schema.Role_ROLE_CLIENT, Path: path, SockType: 1, Peer: server.Task(),
		SockCookie: ck, PeerSockCookie: lk, StartUnixNano: start}}})
	s.truth(Key{From: ident(client), To: ident(server), Transport: schema.Transport_TRANSPORT_UNIX, Path: path}, 0, 0, 0)
}

func (s *Sim) truth(k Key, sent, recv, errs uint64) {
	t := s.Truth[k]
	if t == nil {
		t = &Totals{}
		s.Truth[k] = t
	}
	t.Count++
	t.Sent += sent
	t.Received += recv
	t.Errors += errs
}

func ident(p Proc) string {
	if p.Pod != nil {
		return p.Pod.GetUid()
	}
	return "proc:" + p.Node + ":" + p.Exe
}

// Ident is the truth's name of a call endpoint, the same way Key names it.
func Ident(e *schema.Endpoint) string {
	switch {
	case e.GetPod() != nil:
		return e.GetPod().GetUid()
	case e.GetExternal():
		if a, ok := netip.AddrFromSlice(e.GetAddress()); ok {
			return "ext:" + a.String()
		}
		return "ext:" + string(e.GetAddress())
	default:
		return "proc:" + e.GetNode() + ":" + e.GetTask().GetExe()
	}
}

// Nodes returns the nodes that have events, sorted.
func (s *Sim) Nodes() []string {
	var ns []string
	for n := range s.events {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Batches returns node's events in time order, per batches of at most size.
func (s *Sim) Batches(node string, size int) []*schema.EventBatch {
	evs := append([]*schema.Event(nil), s.events[node]...)
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].GetTimeUnixNano() < evs[b].GetTimeUnixNano() })
	var out []*schema.EventBatch
	for i := 0; i < len(evs); i += size {
		end := min(i+size, len(evs))
		out = append(out, &schema.EventBatch{SchemaVersion: schema.Version,
			Origin: &schema.Origin{Node: node, BootId: "boot-" + node, Epoch: 1, Seq: uint64(len(out) + 1), Stage: "collector"},
			Events: evs[i:end]})
	}
	return out
}

// Interleaved returns every node's batches, merged by their first event's
// time, as a collector fleet would publish them.
func (s *Sim) Interleaved(size int) []*schema.EventBatch {
	var all []*schema.EventBatch
	for _, n := range s.Nodes() {
		all = append(all, s.Batches(n, size)...)
	}
	sort.SliceStable(all, func(a, b int) bool {
		return all[a].GetEvents()[0].GetTimeUnixNano() < all[b].GetEvents()[0].GetTimeUnixNano()
	})
	return all
}

// Drain returns the events added since the last Drain as Interleaved
// does, and forgets them: a live feeder adds traffic, drains, publishes,
// and again. Each node's batch sequence goes on from the last Drain, so
// the batches' message ids never repeat.
func (s *Sim) Drain(size int) []*schema.EventBatch {
	if s.seqs == nil {
		s.seqs = map[string]uint64{}
	}
	var all []*schema.EventBatch
	for _, n := range s.Nodes() {
		for _, b := range s.Batches(n, size) {
			s.seqs[n]++
			b.Origin.Seq = s.seqs[n]
			all = append(all, b)
		}
	}
	clear(s.events)
	sort.SliceStable(all, func(a, b int) bool {
		return all[a].GetEvents()[0].GetTimeUnixNano() < all[b].GetEvents()[0].GetTimeUnixNano()
	})
	return all
}

// Fold adds calls up the way Truth does, for comparison.
func Fold(calls []*schema.Call) map[Key]*Totals {
	got := map[Key]*Totals{}
	for _, c := range calls {
		k := Key{From: Ident(c.GetClient()), To: Ident(c.GetServer()), Transport: c.GetTransport(), Port: c.GetPort(), Path: c.GetPath()}
		t := got[k]
		if t == nil {
			t = &Totals{}
			got[k] = t
		}
		n, sent, recv := schema.Counts(c)
		t.Count += n
		t.Sent += sent
		t.Received += recv
		if c.GetErrno() != 0 {
			t.Errors++
		}
	}
	return got
}
