package schema_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// decoderCalls are calls of every shape the correlator writes: joined TCP
// through a VIP, partial to an External peer, a failed connect (negative
// errno), a unix-socket call, a host process, and a call with nothing set.
func decoderCalls(i int) []*schema.Call {
	pod := &schema.Pod{Uid: fmt.Sprintf("uid-%d", i%7), Name: "app", Namespace: "shop", Node: "node-a", Ips: []string{"10.0.0.2"},
		Labels:     map[string]string{"app": "shop", "tier": "web"},
		Owners:     []*schema.OwnerRef{{Kind: "Deployment", Name: "app", Uid: "o1", Controller: true}},
		Containers: []*schema.Container{{Id: "c1", Name: "app", Image: "shop/app:1"}, {Id: "c2", Name: "envoy"}}}
	task := &schema.Task{Pid: 42, Tid: 42, Ppid: 1, Comm: "app", Exe: "/app", CgroupId: 9, ContainerId: "c1", PodUid: pod.Uid, Attribution: schema.Attribution_ATTRIBUTION_POD}
	id := fmt.Sprintf("tcp:node-a:%x:%x", i, 1000+i)
	return []*schema.Call{
		{Id: id, Transport: schema.Transport_TRANSPORT_TCP, Port: 4222, BytesSent: 10, BytesReceived: 20, StartUnixNano: 1, EndUnixNano: 2,
			DialedAddress: []byte{10, 96, 0, 10}, DialedPort: 4222, Halves: []string{id, fmt.Sprintf("tcp:node-b:%x:1", i)},
			Client: &schema.Endpoint{Node: "node-a", Address: []byte{10, 0, 0, 2}, Port: uint32(40000 + i), Task: task, Pod: pod, Container: pod.Containers[0]},
			Server: &schema.Endpoint{Node: "node-b", Address: []byte{10, 0, 0, 3}, Port: 4222, BrokerKind: "nats", Task: &schema.Task{Pid: 7, Exe: "/nats"}}},
		{Id: "p" + id, Transport: schema.Transport_TRANSPORT_TCP, Port: 443, Partial: true, Halves: []string{"p" + id},
			Client: &schema.Endpoint{Node: "node-a", Address: []byte{10, 0, 0, 2}, Task: task, Pod: pod},
			Server: &schema.Endpoint{Address: []byte{1, 2, 3, 4}, Port: 443, External: true}},
		{Id: "fail" + id[3:], Transport: schema.Transport_TRANSPORT_TCP, Errno: -111, Partial: true, Halves: []string{id},
			Client: &schema.Endpoint{Node: "node-a", Task: task}, Server: &schema.Endpoint{External: true, Address: make([]byte, 16)}},
		{Id: fmt.Sprintf("unix:node-a:%x:%x", i, i+1), Transport: schema.Transport_TRANSPORT_UNIX, Path: "/run/broker.sock",
			Client: &schema.Endpoint{Node: "node-a", Task: task, Pod: pod, Container: pod.Containers[0]},
			Server: &schema.Endpoint{Node: "node-a", Task: task, Pod: pod, Container: pod.Containers[1]}},
		{Id: "host", Transport: schema.Transport(7), Client: &schema.Endpoint{Node: "h", Task: &schema.Task{}}, Server: &schema.Endpoint{}},
		{},
		{Id: id + "#p2a/40", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222, State: schema.CallState_CALL_STATE_PROGRESS,
			BytesSent: 42, BytesReceived: 64, PriorBytesSent: 10, PriorBytesReceived: 20, StartUnixNano: 1, EndUnixNano: 5, SinceUnixNano: 3,
			Client: &schema.Endpoint{Node: "node-a", Task: task, Pod: pod}, Server: &schema.Endpoint{Node: "node-b", Task: task}},
	}
}

func encodedCallBatch(t testing.TB, calls []*schema.Call) []byte {
	data, err := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Origin: &schema.Origin{Node: "n", Seq: 3}, Calls: calls})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sameDecode fails unless d decodes data as DecodeCallBatch does: the same
// batch, or an error both times.
func sameDecode(t testing.TB, d *schema.CallDecoder, data []byte) {
	t.Helper()
	want, werr := schema.DecodeCallBatch(data)
	got, gerr := d.Decode(data)
	if (werr != nil) != (gerr != nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("error %v, DecodeCallBatch's %v", gerr, werr)
	}
	if werr == nil && !proto.Equal(got, want) {
		t.Fatalf("decoded\n%v\nDecodeCallBatch decoded\n%v", got, want)
	}
}

func TestCallDecoderAsDecodeCallBatch(t *testing.T) {
	d := schema.NewCallDecoder()
	var all []*schema.Call
	for i := range 20 {
		all = append(all, decoderCalls(i)...)
	}
	good := encodedCallBatch(t, all)
	call := func(c *schema.Call, extra ...byte) []byte {
		b, _ := proto.Marshal(c)
		b = append(b, extra...)
		return protowire.AppendBytes(protowire.AppendTag(nil, schema.BatchItemsField, protowire.BytesType), b)
	}
	head := encodedCallBatch(t, nil)
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 5)
	secondClient := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0x18, 0x07}) // client.port = 7, merged
	secondOrigin := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0x20, 0x09}) // origin.seq = 9, merged
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff\xfe")
	future, _ := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version + 1, Calls: all[:1]})
	ended := &schema.PodEnded{Pod: all[0].GetClient().GetPod(), EndedUnixNano: 7}
	withEnded, _ := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Calls: all[:3], PodsEnded: []*schema.PodEnded{ended, {Pod: &schema.Pod{Uid: "x"}}}})
	onlyEnded, _ := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, PodsEnded: []*schema.PodEnded{ended}})
	changed := &schema.PodChanged{Pod: all[1].GetServer().GetPod(), ChangedUnixNano: 9}
	allKinds, _ := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Calls: all[:2], PodsEnded: []*schema.PodEnded{ended}, PodsChanged: []*schema.PodChanged{changed, {Pod: &schema.Pod{Uid: "y"}}}})
	onlyChanged, _ := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, PodsChanged: []*schema.PodChanged{changed}})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"calls of every shape", good},
		{"again, from the caches", good},
		{"no calls", head},
		{"calls and ended pods", withEnded},
		{"only ended pods", onlyEnded},
		{"ended pod that does not decode", append(append([]byte{}, head...), protowire.AppendBytes(protowire.AppendTag(nil, schema.PodsEndedField, protowire.BytesType), []byte{0xff})...)},
		{"calls, ended and changed pods", allKinds},
		{"only changed pods", onlyChanged},
		{"changed pod that does not decode", append(append([]byte{}, head...), protowire.AppendBytes(protowire.AppendTag(nil, schema.PodsChangedField, protowire.BytesType), []byte{0xff})...)},
		{"empty body (no version)", nil},
		{"future version", future},
		{"origin written twice, as the publisher does", append(append([]byte{}, head...), secondOrigin...)},
		{"unknown field in a call", append(append([]byte{}, head...), call(all[0], unknown...)...)},
		{"unknown field in the batch", append(append([]byte{}, good...), unknown...)},
		{"client endpoint repeated", append(append([]byte{}, head...), call(all[0], secondClient...)...)},
		{"invalid UTF-8 id", append(append([]byte{}, head...), call(&schema.Call{}, badUTF8...)...)},
		{"truncated", good[:len(good)-3]},
		{"garbage", []byte("this is not protobuf \xff\xff\xff")},
	} {
		t.Run(tc.name, func(t *testing.T) { sameDecode(t, d, tc.data) })
	}

	// The fast path is taken: calls carrying one pod share it, however
	// the writer ordered its labels.
	pod := &schema.Pod{Uid: "u", Name: "p", Labels: map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}}
	var same []*schema.Call
	for range 50 {
		same = append(same, &schema.Call{Client: &schema.Endpoint{Pod: pod}})
	}
	b, err := d.Decode(encodedCallBatch(t, same))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b.GetCalls() {
		if p := c.GetClient().GetPod(); p == nil || p != b.Calls[0].GetClient().GetPod() {
			t.Fatalf("call %d: its pod is another message than call 0's", i)
		}
	}
}

// FuzzCallDecoder: any input decodes as DecodeCallBatch decodes it.
func FuzzCallDecoder(f *testing.F) {
	f.Add(encodedCallBatch(f, decoderCalls(1)))
	f.Add(encodedCallBatch(f, decoderCalls(2)[:1]))
	var compact []*schema.Call
	for _, c := range decoderCalls(3) {
		compact = append(compact, schema.CompactCall(c))
	}
	f.Add(encodedCallBatch(f, compact))
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01, 0x1a, 0x02, 0x1a, 0x00})
	d := schema.NewCallDecoder()
	f.Fuzz(func(t *testing.T, data []byte) { sameDecode(t, d, data) })
}
