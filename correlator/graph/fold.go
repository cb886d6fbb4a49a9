package graph

import (
	"net/netip"

	"github.com/weftobs/weft/streams/schema"
)

// Fold accumulates calls into one pending Batch: entities and links are
// deduplicated, CALLS increments summed per edge, so a batch costs rows in
// proportion to distinct edges, not calls. Not safe for concurrent use.
type Fold struct {
	brokers  Brokers
	entities map[Ref]*Entity
	links    map[Link]struct{}
	edges    map[EdgeKey]*EdgeDelta
	calls    uint64
	seen     *Seen
}

// NewFold returns an empty fold using brokers. seen drops calls whose id
// was folded before (a correlator's re-emission after a crash); nil keeps
// every call.
func NewFold(brokers Brokers, seen *Seen) *Fold {
	f := &Fold{brokers: brokers, seen: seen}
	f.reset()
	return f
}

func (f *Fold) reset() {
	f.entities = map[Ref]*Entity{}
	f.links = map[Link]struct{}{}
	f.edges = map[EdgeKey]*EdgeDelta{}
	f.calls = 0
}

// Calls is how many calls are pending.
func (f *Fold) Calls() uint64 { return f.calls }

// Add folds one call. It reports false for a call already seen.
func (f *Fold) Add(c *schema.Call) bool {
	if f.seen != nil && !f.seen.AddCall(c) {
		return false
	}
	f.calls++
	broker := f.brokers.Match(c)
	cli := f.endpoint(c.GetClient(), "")
	srv := f.endpoint(c.GetServer(), broker)
	transport := "tcp"
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		transport = "unix"
	}
	port := c.GetPort()
	if transport == "unix" {
		port = 0
	}
	f.edge(EdgeKey{From: cli.top, To: srv.top, Transport: transport, Port: port, Path: c.GetPath()}, c)
	if cli.container != nil && srv.container != nil {
		f.edge(EdgeKey{From: *cli.container, To: *srv.container, Transport: transport, Port: port, Path: c.GetPath()}, c)
	}
	return true
}

type resolved struct {
	top       Ref  // Pod, Process or External
	container *Ref // set when the endpoint is in a known container
}

func (f *Fold) upsert(r Ref, props map[string]string, broker string) {
	e := f.entities[r]
	if e == nil {
		f.entities[r] = &Entity{Ref: r, Props: props, Broker: broker}
		return
	}
	if props != nil {
		e.Props = props
	}
	if broker != "" {
		e.Broker = broker
	}
}

func (f *Fold) link(typ string, from, to Ref) {
	f.links[Link{Type: typ, From: from, To: to}] = struct{}{}
}

func (f *Fold) endpoint(e *schema.Endpoint, broker string) resolved {
	var out resolved
	node := e.GetNode()
	if p := e.GetPod(); p != nil && p.GetUid() != "" {
		if node == "" {
			node = p.GetNode()
		}
		out.top = Ref{Label: LabelPod, K1: p.GetUid()}
		if known := f.entities[out.top]; known != nil && known.Props != nil {
			// Seen in this window already: its links are in too. Only a
			// broker match can add something.
			if broker != "" {
				known.Broker = broker
			}
			if c := e.GetContainer(); c != nil && c.GetId() != "" {
				cr := Ref{Label: LabelContainer, K1: c.GetId()}
				if ce := f.entities[cr]; ce != nil && ce.Props != nil {
					if broker != "" {
						ce.Broker = broker
					}
					out.container = &cr
					return out
				}
			} else {
				return out
			}
		}
		var props map[string]string
		if p.GetName() != "" {
			props = map[string]string{"name": p.GetName(), "namespace": p.GetNamespace(), "ip": podIP(p, e)}
		}
		f.upsert(out.top, props, broker)
		if node != "" {
			n := Ref{Label: LabelNode, K1: node}
			f.upsert(n, nil, "")
			f.link(RelRunsOn, out.top, n)
		}
		for _, o := range p.GetOwners() {
			w := Ref{Label: LabelWorkload, K1: o.GetKind(), K2: p.GetNamespace(), K3: o.GetName()}
			f.upsert(w, nil, "")
			f.link(RelOwns, w, out.top)
		}
		if c := e.GetContainer(); c != nil && c.GetId() != "" {
			cr := Ref{Label: LabelContainer, K1: c.GetId()}
			var props map[string]string
			if c.GetName() != "" {
				props = map[string]string{"name": c.GetName(), "image": c.GetImage()}
			}
			f.upsert(cr, props, broker)
			f.link(RelHasContainer, out.top, cr)
			out.container = &cr
		}
		return out
	}
	if !e.GetExternal() && e.GetTask() != nil {
		exe := e.GetTask().GetExe()
		if exe == "" {
			exe = e.GetTask().GetComm()
		}
		out.top = Ref{Label: LabelProcess, K1: node, K2: exe}
		f.upsert(out.top, nil, broker)
		if node != "" {
			n := Ref{Label: LabelNode, K1: node}
			f.upsert(n, nil, "")
			f.link(RelRunsOn, out.top, n)
		}
		return out
	}
	out.top = Ref{Label: LabelExternal, K1: address(e.GetAddress())}
	f.upsert(out.top, nil, "")
	return out
}

func podIP(p *schema.Pod, e *schema.Endpoint) string {
	if !p.GetHostNetwork() && len(p.GetIps()) > 0 {
		return p.GetIps()[0]
	}
	if a, ok := netip.AddrFromSlice(e.GetAddress()); ok {
		return a.Unmap().String()
	}
	if len(p.GetIps()) > 0 {
		return p.GetIps()[0]
	}
	return ""
}

func address(b []byte) string {
	if a, ok := netip.AddrFromSlice(b); ok {
		return a.Unmap().String()
	}
	return string(b)
}

func (f *Fold) edge(k EdgeKey, c *schema.Call) {
	d := f.edges[k]
	first, last := int64(c.GetStartUnixNano()), int64(c.GetEndUnixNano())
	if last < first {
		last = first
	}
	if d == nil {
		d = &EdgeDelta{EdgeKey: k, FirstSeen: first, LastSeen: last}
		f.edges[k] = d
	}
	d.Count++
	d.BytesSent += c.GetBytesSent()
	d.BytesReceived += c.GetBytesReceived()
	if c.GetErrno() != 0 {
		d.Errors++
	}
	d.FirstSeen = min(d.FirstSeen, first)
	d.LastSeen = max(d.LastSeen, last)
}

// Take returns the pending changes as a batch at stream sequence seq and
// empties the fold.
func (f *Fold) Take(seq uint64) *Batch {
	b := &Batch{Seq: seq, Calls: f.calls,
		Entities: make([]Entity, 0, len(f.entities)), Links: make([]Link, 0, len(f.links)), Edges: make([]EdgeDelta, 0, len(f.edges))}
	for _, e := range f.entities {
		b.Entities = append(b.Entities, *e)
	}
	for l := range f.links {
		b.Links = append(b.Links, l)
	}
	for _, d := range f.edges {
		b.Edges = append(b.Edges, *d)
	}
	f.reset()
	return b
}

// Seen remembers the ids of the last calls folded, in two generations of
// at most Size ids each, so memory is bounded and a re-emitted call (same
// id, shortly after) is recognised.
type Seen struct {
	size     int
	cur, old map[uint64]struct{}
}

// NewSeen returns a Seen remembering between size and 2*size ids.
func NewSeen(size int) *Seen {
	if size <= 0 {
		size = 1 << 20
	}
	return &Seen{size: size, cur: make(map[uint64]struct{}, 1024), old: map[uint64]struct{}{}}
}

// Add records id and reports whether it was new.
func (s *Seen) Add(id string) bool {
	if id == "" {
		return true
	}
	h := fnv64a(id)
	if _, ok := s.cur[h]; ok {
		return false
	}
	if _, ok := s.old[h]; ok {
		return false
	}
	if len(s.cur) >= s.size {
		s.old, s.cur = s.cur, make(map[uint64]struct{}, 1024)
	}
	s.cur[h] = struct{}{}
	return true
}

// AddCall records a call's connection halves (its id when it names none)
// and reports whether the call is new: a call sharing any half with one
// already recorded is the same connection, emitted again.
func (s *Seen) AddCall(c *schema.Call) bool {
	halves := c.GetHalves()
	if len(halves) == 0 {
		return s.Add(c.GetId())
	}
	for _, h := range halves {
		if s.has(fnv64a(h)) {
			return false
		}
	}
	for _, h := range halves {
		s.Add(h)
	}
	return true
}

func (s *Seen) has(h uint64) bool {
	_, cur := s.cur[h]
	_, old := s.old[h]
	return cur || old
}

func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
