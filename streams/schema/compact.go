package schema

import (
	"fmt"
	"reflect"
	"sync"

	"google.golang.org/protobuf/proto"
)

// NewCallCompactor returns what compacts the calls of one CALLS message,
// given in the order they are written: each call as CompactCall does,
// and, further, an endpoint's pod (container) reduced to its uid (id)
// when an earlier endpoint of the message carries the same one whole
// (Endpoint.pod_in_batch, container_in_batch). A message leans on nothing
// outside itself, so any message decodes alone (replay from any sequence,
// a dead letter). DecodeCallBatch and CallDecoder put everything back.
//
// It is made for publish.Config.PerBatch: one per message, fed every item
// of that message in order; an item that is not a *Call is returned as
// it is. The calls it returns are valid as long as those given.
func NewCallCompactor() func(proto.Message) proto.Message {
	pods := map[string]*Pod{}
	ctrs := map[string]*Container{}
	return func(m proto.Message) proto.Message {
		c, ok := m.(*Call)
		if !ok {
			return m
		}
		return compactCall(c, pods, ctrs)
	}
}

// batchRefs resolves the pods and containers endpoints of one message
// leave to earlier endpoints (NewCallCompactor). Feed it every endpoint in
// order: calls in order, client before server.
type batchRefs struct {
	pods map[string]*Pod
	ctrs map[string]*Container
}

// resolve puts e's whole pod and container back; it reports false when e
// leans on one no earlier endpoint carries. The pod and container put in
// are shared with that endpoint.
func (r *batchRefs) resolve(e *Endpoint) bool {
	if e == nil {
		return true
	}
	if uid := e.GetPod().GetUid(); e.GetPodInBatch() {
		p := r.pods[uid]
		if p == nil {
			return false
		}
		e.Pod, e.PodInBatch = p, false
	} else if uid != "" {
		if r.pods == nil {
			r.pods = map[string]*Pod{}
		}
		r.pods[uid] = e.Pod
	}
	if id := e.GetContainer().GetId(); e.GetContainerInBatch() {
		k := r.ctrs[id]
		if k == nil {
			return false
		}
		e.Container, e.ContainerInBatch = k, false
	} else if id != "" {
		if r.ctrs == nil {
			r.ctrs = map[string]*Container{}
		}
		r.ctrs[id] = e.Container
	}
	return true
}

// expandBatch puts back, in place, everything the writer of b left out
// (NewCallCompactor). Every call, endpoint, pod and container of b is its
// own afterwards: a pod put back is a copy.
func expandBatch(b *CallBatch) error {
	var refs batchRefs
	for i, c := range b.GetCalls() {
		expandCall(c)
		for _, x := range []struct {
			side string
			e    *Endpoint
		}{{"client", c.GetClient()}, {"server", c.GetServer()}} {
			pod, ctr := x.e.GetPodInBatch(), x.e.GetContainerInBatch()
			if !refs.resolve(x.e) {
				return fmt.Errorf("call %d %s: its pod %q or container %q is carried by no earlier call of the message",
					i, x.side, x.e.GetPod().GetUid(), x.e.GetContainer().GetId())
			}
			if pod {
				x.e.Pod = proto.Clone(x.e.Pod).(*Pod)
			}
			if ctr {
				x.e.Container = proto.Clone(x.e.Container).(*Container)
			}
		}
	}
	return nil
}

// CompactCall returns c as a writer puts it on CALLS: without what the
// call repeats of itself. A task's pod_uid and container_id are left out
// when they are its endpoint's pod.uid and container.id
// (Endpoint.task_ids_from_endpoint), and the first half when it is the
// call's id (Call.halves_after_id). DecodeCallBatch and CallDecoder put
// both back, so every reader sees c as it was; a message written without
// them (any older writer) reads as it always did.
//
// c is not modified; the result shares everything it does not change with
// c, so it is valid as long as c is. A call with nothing to leave out is
// returned as it is.
func CompactCall(c *Call) *Call { return compactCall(c, nil, nil) }

// compactCall is CompactCall and, given pods and ctrs (what earlier
// endpoints of the message carry whole, updated here), NewCallCompactor's
// references too. Each message it changes is copied once.
func compactCall(c *Call, pods map[string]*Pod, ctrs map[string]*Container) *Call {
	halves := len(c.GetHalves()) > 0 && c.GetHalves()[0] == c.GetId() && !c.GetHalvesAfterId()
	cli := compactEndpoint(c.GetClient(), pods, ctrs)
	srv := compactEndpoint(c.GetServer(), pods, ctrs)
	if !halves && cli == c.GetClient() && srv == c.GetServer() {
		return c
	}
	out := shallowCopy(c)
	if halves {
		out.Halves, out.HalvesAfterId = c.Halves[1:], true
	}
	out.Client, out.Server = cli, srv
	return out
}

// compactEndpoint is e without its task's pod and container ids when they
// are e's own and, given pods and ctrs, with its pod and container
// reduced to references when an earlier endpoint carries them whole
// (recording what e carries whole); or e itself when nothing is left out.
func compactEndpoint(e *Endpoint, pods map[string]*Pod, ctrs map[string]*Container) *Endpoint {
	if e == nil {
		return nil
	}
	t := e.GetTask()
	ids := t != nil && !e.GetTaskIdsFromEndpoint() && (t.GetPodUid() != "" || t.GetContainerId() != "") &&
		t.GetPodUid() == e.GetPod().GetUid() && t.GetContainerId() == e.GetContainer().GetId()
	podRef, ctrRef := false, false
	if p := e.GetPod(); pods != nil && p.GetUid() != "" && !e.GetPodInBatch() {
		if prev := pods[p.GetUid()]; prev != nil && (prev == p || proto.Equal(prev, p)) {
			podRef = true
		} else {
			pods[p.GetUid()] = p
		}
	}
	if k := e.GetContainer(); ctrs != nil && k.GetId() != "" && !e.GetContainerInBatch() {
		if prev := ctrs[k.GetId()]; prev != nil && (prev == k || proto.Equal(prev, k)) {
			ctrRef = true
		} else {
			ctrs[k.GetId()] = k
		}
	}
	if !ids && !podRef && !ctrRef {
		return e
	}
	out := shallowCopy(e)
	if ids {
		ct := shallowCopy(t)
		ct.PodUid, ct.ContainerId = "", ""
		out.Task, out.TaskIdsFromEndpoint = ct, true
	}
	if podRef {
		out.Pod, out.PodInBatch = &Pod{Uid: e.GetPod().GetUid()}, true
	}
	if ctrRef {
		out.Container, out.ContainerInBatch = &Container{Id: e.GetContainer().GetId()}, true
	}
	return out
}

// expandCall puts back, in place, what CompactCall left out of c, which
// the caller owns whole (freshly unmarshalled).
func expandCall(c *Call) {
	if c.GetHalvesAfterId() {
		c.Halves = append([]string{c.GetId()}, c.Halves...)
		c.HalvesAfterId = false
	}
	for _, e := range []*Endpoint{c.GetClient(), c.GetServer()} {
		if e.GetTaskIdsFromEndpoint() {
			if t := e.GetTask(); t != nil {
				t.PodUid, t.ContainerId = e.GetPod().GetUid(), e.GetContainer().GetId()
			}
			e.TaskIdsFromEndpoint = false
		}
	}
}

// shallowCopy is a new message with m's field values: messages, lists
// and bytes are shared, not copied. It copies every field of the
// generated struct (its exported fields), whoever added it, and not the
// unknown fields. It is the Go struct's fields rather than protoreflect's
// Range and Set, which cost as much as encoding the call.
func shallowCopy[M any, P interface {
	*M
	proto.Message
}](m P) P {
	out := P(new(M))
	src, dst := reflect.ValueOf(m).Elem(), reflect.ValueOf(out).Elem()
	for _, i := range exportedFields(src.Type()) {
		dst.Field(i).Set(src.Field(i))
	}
	return out
}

var fieldsByType sync.Map // reflect.Type → []int

// exportedFields are the indices of t's exported fields: a generated
// message's proto fields (a oneof is one interface field).
func exportedFields(t reflect.Type) []int {
	if f, ok := fieldsByType.Load(t); ok {
		return f.([]int)
	}
	var f []int
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			f = append(f, i)
		}
	}
	fieldsByType.Store(t, f)
	return f
}
