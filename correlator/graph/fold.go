package graph

import (
	"maps"
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
	pairs    map[pairKey]*pair
	calls    uint64
	bucket   int64
	seen     *Seen
	written  *Written
}

// SetBucket sets the retention bucket (Batch.Bucket) of what is folded
// next. A batch is of one bucket: the caller takes what is pending before
// it changes the bucket.
func (f *Fold) SetBucket(b int64) { f.bucket = b }

// Bucket is the retention bucket of what is folded.
func (f *Fold) Bucket() int64 { return f.bucket }

// Empty reports whether nothing is pending.
func (f *Fold) Empty() bool { return len(f.entities) == 0 && len(f.links) == 0 && len(f.edges) == 0 }

// NewFold returns an empty fold using brokers. seen drops calls whose id
// was folded before (a correlator's re-emission after a crash); nil keeps
// every call.
func NewFold(brokers Brokers, seen *Seen) *Fold {
	f := &Fold{brokers: brokers, seen: seen}
	f.reset()
	return f
}

// SkipWritten makes Take leave out of each batch the nodes and links the
// store was given before, unchanged, as w records them (see Written).
// Without it (or with nil) a batch writes them wherever they occur.
func (f *Fold) SkipWritten(w *Written) { f.written = w }

func (f *Fold) reset() {
	// The next window holds about what this one held: size the maps at
	// once rather than through every growth step.
	f.entities = make(map[Ref]*Entity, len(f.entities))
	f.links = make(map[Link]struct{}, len(f.links))
	f.edges = make(map[EdgeKey]*EdgeDelta, len(f.edges))
	f.pairs = make(map[pairKey]*pair, len(f.pairs))
	f.calls = 0
}

// pairKey is what folding a call between two pod endpoints depends on
// once both pods (and containers) are in the window with their
// properties: the messages themselves, compared by address. Calls from
// one schema.CallDecoder share the pods and containers they carry, so the
// calls of one pair of endpoints share a key; calls decoded otherwise
// never do, and take the long way every time.
type pairKey struct {
	cliPod, srvPod *schema.Pod
	cliCtr, srvCtr *schema.Container
	brokerKind     string // the server's, as the correlator set it
	srvExternal    bool
	transport      schema.Transport
	port           uint32
	path           string
}

// pair is what the long way found for a pairKey in this window.
type pair struct {
	broker        string
	srv, srvCtr   *Entity // the server's pod and container
	podEdge, edge *EdgeDelta
}

func keyOf(c *schema.Call) (pairKey, bool) {
	cli, srv := c.GetClient(), c.GetServer()
	if cli.GetPod().GetUid() == "" || srv.GetPod().GetUid() == "" {
		return pairKey{}, false
	}
	return pairKey{cliPod: cli.GetPod(), srvPod: srv.GetPod(), cliCtr: cli.GetContainer(), srvCtr: srv.GetContainer(),
		brokerKind: srv.GetBrokerKind(), srvExternal: srv.GetExternal(),
		transport: c.GetTransport(), port: c.GetPort(), path: c.GetPath()}, true
}

// known reports whether r is in the window with its properties, as the
// long way leaves a pod or container once it has seen its metadata.
func (f *Fold) known(r *Ref) *Entity {
	if r == nil {
		return nil
	}
	if e := f.entities[*r]; e != nil && e.Props != nil {
		return e
	}
	return nil
}

// Calls is how many calls are pending.
func (f *Fold) Calls() uint64 { return f.calls }

// Add folds one call. It reports false for a call already seen.
func (f *Fold) Add(c *schema.Call) bool {
	if f.seen != nil && !f.seen.AddCall(c) {
		return false
	}
	f.calls++
	key, pod := keyOf(c)
	if pod {
		if p := f.pairs[key]; p != nil {
			// Seen in this window: only the broker mark and the counts
			// change, as the long way below would find.
			if p.broker != "" {
				p.srv.Broker = p.broker
				if p.srvCtr != nil {
					p.srvCtr.Broker = p.broker
				}
			}
			count(p.podEdge, c)
			if p.edge != nil {
				count(p.edge, c)
			}
			return true
		}
	}
	broker := f.brokers.Match(c)
	cli := f.endpoint(c.GetClient(), "", false)
	srv := f.endpoint(c.GetServer(), broker, false)
	transport := "tcp"
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		transport = "unix"
	}
	// One edge shape everywhere: a TCP edge is keyed by port and has no
	// path, a unix edge by path and has no port.
	port, path := c.GetPort(), ""
	if transport == "unix" {
		port, path = 0, c.GetPath()
	}
	p := &pair{broker: broker}
	p.podEdge = f.edge(EdgeKey{From: cli.top, To: srv.top, Transport: transport, Port: port, Path: path}, c)
	if cli.container != nil && srv.container != nil {
		p.edge = f.edge(EdgeKey{From: *cli.container, To: *srv.container, Transport: transport, Port: port, Path: path}, c)
	}
	// Once both ends are in the window with their metadata, the next call
	// between them would change nothing the long way finds.
	if pod && f.known(&cli.top) != nil && (cli.container == nil || f.known(cli.container) != nil) {
		p.srv, p.srvCtr = f.known(&srv.top), f.known(srv.container)
		if p.srv != nil && (srv.container == nil || p.srvCtr != nil) {
			f.pairs[key] = p
		}
	}
	return true
}

type resolved struct {
	top       Ref  // Pod, Process or External
	container *Ref // set when the endpoint is in a known container
}

// AddEnded folds a pod a delete ended: the pod as last announced (its
// node, owner and containers, as a call's endpoint brings them) and its
// end on the pod and each of its containers. A pod ended that no call
// named is in the graph too, ended: the pods that ran, not only those
// seen talking, stay queryable for as long as the graph keeps them.
func (f *Fold) AddEnded(e *schema.PodEnded) { f.addPod(e.GetPod(), int64(e.GetEndedUnixNano())) }

// AddChanged folds a pod announced again with something new about it: its
// metadata and containers as now announced (a client container named only
// once the kubelet reported it, after its one call).
func (f *Fold) AddChanged(e *schema.PodChanged) { f.addPod(e.GetPod(), 0) }

// addPod folds pod p as a call's endpoint would, once per container, and
// ends it and its containers at at (Unix nanoseconds) unless at is 0.
func (f *Fold) addPod(p *schema.Pod, at int64) {
	if p.GetUid() == "" {
		return
	}
	ep := &schema.Endpoint{Node: p.GetNode(), Pod: p}
	ctrs := p.GetContainers()
	if len(ctrs) == 0 {
		ctrs = []*schema.Container{nil}
	}
	for _, c := range ctrs {
		ep.Container = c
		r := f.endpoint(ep, "", true)
		f.end(r.top, at)
		if r.container != nil {
			f.end(*r.container, at)
		}
	}
}

// end records that r ended at at, keeping the earliest end.
func (f *Fold) end(r Ref, at int64) {
	if e := f.entities[r]; e != nil && at != 0 && (e.EndedAt == 0 || at < e.EndedAt) {
		e.EndedAt = at
	}
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

// endpoint folds e's pod (or process, or external address) and what it
// links to. A pod already folded in this window with its metadata is
// taken as it is unless again is set: a pod's own announcement (an end,
// a change) writes it again in full, so the graph does not depend on
// where the window's boundaries fell.
func (f *Fold) endpoint(e *schema.Endpoint, broker string, again bool) resolved {
	var out resolved
	node := e.GetNode()
	if p := e.GetPod(); p != nil && p.GetUid() != "" {
		if node == "" {
			node = p.GetNode()
		}
		out.top = Ref{Label: LabelPod, K1: p.GetUid()}
		if known := f.entities[out.top]; known != nil && known.Props != nil && !again {
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
		// The top controller owns the pod, never a ReplicaSet or Job in
		// between, whose hashed names change at every rollout or run.
		if o := schema.WorkloadOf(p); o != nil {
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

func (f *Fold) edge(k EdgeKey, c *schema.Call) *EdgeDelta {
	d := f.edges[k]
	if d == nil {
		first := int64(c.GetStartUnixNano())
		d = &EdgeDelta{EdgeKey: k, FirstSeen: first, LastSeen: first}
		f.edges[k] = d
	}
	count(d, c)
	return d
}

// count adds c to d: a connection counts once, at its whole call or its
// OPEN, and each emission adds the bytes since the connection's previous
// one (schema.Counts), so an open connection's edge has its latest totals.
func count(d *EdgeDelta, c *schema.Call) {
	first, last := int64(c.GetStartUnixNano()), int64(c.GetEndUnixNano())
	if last < first {
		last = first
	}
	n, sent, recv := schema.Counts(c)
	d.Count += n
	d.BytesSent += sent
	d.BytesReceived += recv
	if c.GetErrno() != 0 {
		d.Errors++
	}
	d.FirstSeen = min(d.FirstSeen, first)
	d.LastSeen = max(d.LastSeen, last)
}

// Take returns the pending changes as a batch at stream sequence seq and
// empties the fold. With a Written record, nodes and links the store was
// given before with the same properties are left out, and the record
// takes in what the batch carries: the caller applies the batch (retrying
// it until it lands) before the next one it takes.
func (f *Fold) Take(seq uint64) *Batch {
	b := &Batch{Seq: seq, Calls: f.calls, Bucket: f.bucket,
		Entities: make([]Entity, 0, len(f.entities)), Links: make([]Link, 0, len(f.links)), Edges: make([]EdgeDelta, 0, len(f.edges))}
	for _, e := range f.entities {
		if f.written.entity(e, f.bucket) {
			b.Entities = append(b.Entities, *e)
		}
	}
	for l := range f.links {
		if f.written.link(l, f.bucket) {
			b.Links = append(b.Links, l)
		}
	}
	for _, d := range f.edges {
		b.Edges = append(b.Edges, *d)
	}
	f.reset()
	return b
}

// Written is a bounded record of the nodes (with their properties and
// broker mark) and structural links a store has been given, so a batch
// leaves out what would only MERGE again what the store holds: a batch
// then costs rows in proportion to the edges whose counts changed, not to
// every pod and container they touch. It holds between size and 2*size
// nodes and as many links, the least recently seen forgotten first (a
// forgotten one is written again, which MERGE makes harmless).
//
// The record describes one store as this process has written it: make a
// new one whenever the store is opened, so a restarted store (or a new
// database) gets everything again in its first batch. Not safe for
// concurrent use.
type Written struct {
	nodes generations[Ref, written]
	links generations[Link, int64] // → the bucket it was written in
}

type written struct {
	props   map[string]string
	broker  string
	endedAt int64
	bucket  int64 // the retention bucket it was last written in
}

// NewWritten returns an empty record of at most 2*size nodes and links;
// size <= 0 means 1<<17.
func NewWritten(size int) *Written {
	if size <= 0 {
		size = 1 << 17
	}
	return &Written{nodes: newGenerations[Ref, written](size), links: newGenerations[Link, int64](size)}
}

// entity reports whether e must be written in a batch of bucket, and
// records it. Props nil and an empty Broker change nothing in a store, so
// they match any record; a node is written again in every new bucket,
// which the store records as the last that named it. A nil record writes
// everything.
func (w *Written) entity(e *Entity, bucket int64) bool {
	if w == nil {
		return true
	}
	rec, ok := w.nodes.get(e.Ref)
	if ok && rec.bucket == bucket && (e.Props == nil || maps.Equal(e.Props, rec.props)) && (e.Broker == "" || e.Broker == rec.broker) &&
		(e.EndedAt == 0 || e.EndedAt == rec.endedAt) {
		return false
	}
	if rec.bucket != bucket {
		rec = written{bucket: bucket}
	}
	if e.EndedAt != 0 {
		rec.endedAt = e.EndedAt
	}
	if e.Props != nil {
		rec.props = e.Props // the batch's own map, never changed after Take
	}
	if e.Broker != "" {
		rec.broker = e.Broker
	}
	w.nodes.put(e.Ref, rec)
	return true
}

// link reports whether l must be written in a batch of bucket, and
// records it.
func (w *Written) link(l Link, bucket int64) bool {
	if w == nil {
		return true
	}
	if b, ok := w.links.get(l); ok && b == bucket {
		return false
	}
	w.links.put(l, bucket)
	return true
}

// generations is a map bounded to between size and 2*size keys: when the
// current generation is full it becomes the old one, and the old one is
// dropped. A key found in the old generation moves to the current.
type generations[K comparable, V any] struct {
	size     int
	cur, old map[K]V
}

func newGenerations[K comparable, V any](size int) generations[K, V] {
	return generations[K, V]{size: size, cur: map[K]V{}, old: map[K]V{}}
}

func (g *generations[K, V]) get(k K) (V, bool) {
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	v, ok := g.old[k]
	if ok {
		g.put(k, v)
	}
	return v, ok
}

func (g *generations[K, V]) put(k K, v V) {
	if _, ok := g.cur[k]; !ok && len(g.cur) >= g.size {
		g.old, g.cur = g.cur, make(map[K]V, len(g.cur))
	}
	g.cur[k] = v
}

// Seen remembers the ids of the last calls folded, in two generations of
// at most Size ids each, so memory is bounded and a re-emitted call (same
// id, shortly after) is recognised.
//
// It remembers 64-bit hashes of the ids in open-addressed tables rather
// than Go maps: a replay looks up every half of every call, each lookup a
// cache miss in tables of millions, and a probe of a flat array is the
// cheapest miss there is.
type Seen struct {
	size     int
	cur, old hashSet
}

// NewSeen returns a Seen remembering between size and 2*size ids.
func NewSeen(size int) *Seen {
	if size <= 0 {
		size = 1 << 20
	}
	return &Seen{size: size, cur: newHashSet(min(size, 1024)), old: newHashSet(0)}
}

// Add records id and reports whether it was new.
func (s *Seen) Add(id string) bool {
	if id == "" {
		return true
	}
	h := idHash(id)
	if s.has(h) {
		return false
	}
	s.put(h)
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
	if len(halves) == 2 && halves[0] != "" && halves[1] != "" {
		// A call's two halves, each looked for in both generations: four
		// cache misses in tables of millions, which the processor waits
		// for together when the four loads come first. Most halves are
		// new and find their first slot empty.
		h0, h1 := idHash(halves[0]), idHash(halves[1])
		if s.cur.at(h0)|s.cur.at(h1)|s.old.at(h0)|s.old.at(h1) == 0 {
			s.put(h0)
			s.put(h1)
			return true
		}
	}
	var buf [2]uint64
	hs := buf[:0]
	for _, h := range halves {
		if h == "" {
			continue
		}
		x := idHash(h)
		if s.has(x) {
			return false
		}
		hs = append(hs, x)
	}
	for _, x := range hs {
		s.put(x)
	}
	return true
}

func (s *Seen) has(h uint64) bool { return s.cur.has(h) || s.old.has(h) }

func (s *Seen) put(h uint64) {
	if s.cur.n >= s.size {
		// The old generation's table, emptied, is the size the next
		// one needs once it fills as this one did.
		s.old, s.cur = s.cur, s.old
		s.cur.reset(s.size)
	}
	s.cur.add(h)
}

// idHash is the id's FNV-1a hash, never 0 (an empty slot).
func idHash(id string) uint64 {
	if h := fnv64a(id); h != 0 {
		return h
	}
	return 1
}

// hashSet is a set of non-zero hashes, open-addressed with linear probing
// and kept at most half full.
type hashSet struct {
	slots []uint64
	shift uint8
	n     int
}

func newHashSet(size int) hashSet {
	var t hashSet
	t.reset(size)
	return t
}

// reset empties t, making room for size hashes (or keeping the room it has).
func (t *hashSet) reset(size int) {
	bits := uint8(4)
	for 1<<bits < 2*size {
		bits++
	}
	if len(t.slots) >= 1<<bits {
		clear(t.slots)
	} else {
		t.slots = make([]uint64, 1<<bits)
		t.shift = 64 - bits
	}
	t.n = 0
}

// home is h's first slot: Fibonacci hashing spreads FNV's low-entropy
// high bits over the whole table.
func (t *hashSet) home(h uint64) uint64 { return (h * 0x9e3779b97f4a7c15) >> t.shift }

// at is what h's first slot holds.
func (t *hashSet) at(h uint64) uint64 { return t.slots[t.home(h)] }

func (t *hashSet) has(h uint64) bool {
	mask := uint64(len(t.slots) - 1)
	for i := t.home(h); ; i = (i + 1) & mask {
		switch t.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

func (t *hashSet) add(h uint64) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := t.home(h); ; i = (i + 1) & mask {
		switch t.slots[i] {
		case h:
			return
		case 0:
			t.slots[i] = h
			t.n++
			return
		}
	}
}

func (t *hashSet) grow() {
	old := t.slots
	*t = hashSet{slots: make([]uint64, 2*len(old)), shift: t.shift - 1}
	for _, h := range old {
		if h != 0 {
			t.add(h)
		}
	}
}

func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
