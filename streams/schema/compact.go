package schema

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

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
func CompactCall(c *Call) *Call {
	halves := len(c.GetHalves()) > 0 && c.GetHalves()[0] == c.GetId() && !c.GetHalvesAfterId()
	cli, srv := compactEndpoint(c.GetClient()), compactEndpoint(c.GetServer())
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
// are e's own, or e itself.
func compactEndpoint(e *Endpoint) *Endpoint {
	t := e.GetTask()
	if t == nil || e.GetTaskIdsFromEndpoint() || (t.GetPodUid() == "" && t.GetContainerId() == "") ||
		t.GetPodUid() != e.GetPod().GetUid() || t.GetContainerId() != e.GetContainer().GetId() {
		return e
	}
	ct := shallowCopy(t)
	ct.PodUid, ct.ContainerId = "", ""
	out := shallowCopy(e)
	out.Task, out.TaskIdsFromEndpoint = ct, true
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

// shallowCopy is a new m with the same field values: messages, lists and
// bytes are shared, not copied. Every field is copied, whoever added it.
func shallowCopy[M proto.Message](m M) M {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	return dst.Interface().(M)
}
