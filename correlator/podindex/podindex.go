// Package podindex remembers what nodes said about pods (PodEvents) so an
// address, a container id or a pod uid resolves to the pod it meant at the
// time of an event. An IP's history is kept: when pod A is deleted and pod B
// later gets its IP, a lookup at a time A held the IP returns A, never B.
//
// It owns no I/O and is not safe for concurrent use; the joiner serialises
// access.
package podindex

import (
	"net/netip"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// Grace is how far before a pod's first sighting an address lookup may
// still match it: collectors report a pod shortly after it starts, and its
// first connections can precede the report. It never reaches back into
// another pod's span.
const Grace = uint64(5e9)

// Index is the pod history. The zero value is not ready; use New.
type Index struct {
	pods       map[string]*entry
	containers map[string]*containerEntry
	ips        map[netip.Addr][]span
	deleted    []string // uids of deleted pods, oldest first
	maxDeleted int
	maxSpans   int
}

type entry struct {
	pod      *schema.Pod // as announced, with containers
	endpoint *schema.Pod // trimmed copy for call endpoints (no containers)
	at       uint64      // time of the announcement (or delete) it holds
	deleted  bool
}

type containerEntry struct {
	c      *schema.Container
	podUID string
}

type span struct {
	uid      string
	from, to uint64 // to == 0: still held
}

// New returns an empty index keeping at most maxDeleted deleted pods (for
// lookups of events that arrive after the delete) and maxSpans spans per IP.
func New(maxDeleted, maxSpans int) *Index {
	if maxDeleted <= 0 {
		maxDeleted = 65536
	}
	if maxSpans <= 0 {
		maxSpans = 16
	}
	return &Index{
		pods: map[string]*entry{}, containers: map[string]*containerEntry{},
		ips: map[netip.Addr][]span{}, maxDeleted: maxDeleted, maxSpans: maxSpans,
	}
}

// Apply records a pod event seen at time t (Unix nanoseconds).
//
// For a delete that ends a pod it returns, as ended, the pod as last
// announced, with its containers (the delete's own pod when none was
// announced, which is then kept as ended: a late upsert of it changes
// nothing); a delete of a pod already ended returns nothing.
//
// For an upsert of a pod already announced that says something new about
// it (a container's name and image, once the kubelet reported them; new
// labels, owners or addresses) it returns, as changed, the pod as now
// announced. A first announcement, or one that repeats the last, returns
// nothing: the calls' endpoints bring what it says. An upsert older than
// the pod's last announcement (a redelivered message) changes nothing.
func (x *Index) Apply(t uint64, ev *schema.PodEvent) (changed, ended *schema.Pod) {
	p := ev.GetPod()
	if p.GetUid() == "" {
		return nil, nil
	}
	switch ev.GetOp() {
	case schema.PodEvent_OP_DELETE:
		e := x.pods[p.GetUid()]
		if e != nil && e.deleted {
			return nil, nil
		}
		if e == nil {
			e = &entry{pod: p, endpoint: trim(p)}
			x.pods[p.GetUid()] = e
		}
		e.deleted, e.at = true, t
		x.closeSpans(e.pod, t)
		x.deleted = append(x.deleted, p.GetUid())
		for len(x.deleted) > x.maxDeleted {
			x.forget(x.deleted[0])
			x.deleted = x.deleted[1:]
		}
		return nil, e.pod
	default:
		old := x.pods[p.GetUid()]
		if old != nil && (old.deleted || t < old.at) {
			// A late upsert of a deleted pod must not reopen its IPs;
			// an older announcement must not undo a newer one.
			return nil, nil
		}
		if old != nil && !proto.Equal(old.pod, p) {
			changed = p
		}
		e := &entry{pod: p, endpoint: trim(p), at: t}
		x.pods[p.GetUid()] = e
		for _, c := range p.GetContainers() {
			if c.GetId() != "" {
				x.containers[c.GetId()] = &containerEntry{c: c, podUID: p.GetUid()}
			}
		}
		if p.GetHostNetwork() {
			return changed, nil // the node's address: shared by many pods, names none
		}
		for _, s := range p.GetIps() {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			x.open(a.Unmap(), p.GetUid(), t)
		}
		return changed, nil
	}
}

func trim(p *schema.Pod) *schema.Pod {
	return &schema.Pod{
		Uid: p.GetUid(), Name: p.GetName(), Namespace: p.GetNamespace(), Node: p.GetNode(),
		Ips: p.GetIps(), HostNetwork: p.GetHostNetwork(), Labels: p.GetLabels(), Owners: p.GetOwners(),
		Workload: p.GetWorkload(),
	}
}

func (x *Index) open(a netip.Addr, uid string, t uint64) {
	spans := x.ips[a]
	if n := len(spans); n > 0 {
		last := &spans[n-1]
		if last.uid == uid && last.to == 0 {
			return
		}
		if last.to == 0 || last.to > t {
			last.to = t // B got A's address: A no longer holds it
		}
	}
	spans = append(spans, span{uid: uid, from: t})
	if len(spans) > x.maxSpans {
		spans = spans[len(spans)-x.maxSpans:]
	}
	x.ips[a] = spans
}

func (x *Index) closeSpans(p *schema.Pod, t uint64) {
	for _, s := range p.GetIps() {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		spans := x.ips[a.Unmap()]
		for i := range spans {
			if spans[i].uid == p.GetUid() && spans[i].to == 0 {
				spans[i].to = t
			}
		}
	}
}

func (x *Index) forget(uid string) {
	e := x.pods[uid]
	if e == nil || !e.deleted {
		return
	}
	delete(x.pods, uid)
	for _, c := range e.pod.GetContainers() {
		if ce := x.containers[c.GetId()]; ce != nil && ce.podUID == uid {
			delete(x.containers, c.GetId())
		}
	}
}

// Pod returns the pod with uid as it should appear in a call endpoint (no
// containers), or nil.
func (x *Index) Pod(uid string) *schema.Pod {
	if e := x.pods[uid]; e != nil {
		return e.endpoint
	}
	return nil
}

// Container returns the container with id, or nil.
func (x *Index) Container(id string) *schema.Container {
	if ce := x.containers[id]; ce != nil {
		return ce.c
	}
	return nil
}

// PodAt returns the pod that held address a at time t, or nil. Host-network
// pods never match: their address is the node's.
func (x *Index) PodAt(a netip.Addr, t uint64) *schema.Pod {
	spans := x.ips[a.Unmap()]
	for i := len(spans) - 1; i >= 0; i-- {
		s := spans[i]
		if s.from <= t && (s.to == 0 || t < s.to) {
			return x.Pod(s.uid)
		}
	}
	// Not inside any span: the oldest span starting within Grace after t,
	// provided no span covers t (checked above).
	for _, s := range spans {
		if s.from > t && s.from-t <= Grace {
			return x.Pod(s.uid)
		}
	}
	return nil
}

// Len is the number of pods known (deleted ones included).
func (x *Index) Len() int { return len(x.pods) }
