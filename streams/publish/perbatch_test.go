package publish_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestPerBatchCompaction: calls published through schema.NewCallCompactor
// (one per message) are stored smaller, and every stored message decodes
// on its own to exactly the calls published, however the messages split
// them, interleaved on two subjects; ended pods published among the calls
// (schema.ItemField) decode as such, with the message they are in.
func TestPerBatchCompaction(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "CALLS", "weft.calls.>")
	ctx := context.Background()
	pods := make([]*schema.Pod, 3)
	for i := range pods {
		pods[i] = &schema.Pod{Uid: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("app-%d", i), Namespace: "shop",
			Labels: map[string]string{"app": "shop", "pod-template-hash": "5d8f7c9b6"}, Owners: []*schema.OwnerRef{{Kind: "Deployment", Name: "shop", Controller: true}}}
	}
	ctr := &schema.Container{Id: fmt.Sprintf("%064x", 1), Name: "app", Image: "shop/app:1"}
	var calls []*schema.Call
	for i := range 100 {
		p := pods[i%len(pods)]
		calls = append(calls, &schema.Call{Id: fmt.Sprint("tcp:n:", i), Halves: []string{fmt.Sprint("tcp:n:", i)}, Port: 80,
			Client: &schema.Endpoint{Node: fmt.Sprint("n", i%2), Pod: p, Container: ctr, Task: &schema.Task{Pid: 1, PodUid: p.Uid, ContainerId: ctr.Id}},
			Server: &schema.Endpoint{Node: "n0", Pod: pods[0], Task: &schema.Task{Pid: 2, PodUid: pods[0].Uid}}})
	}
	publishAll := func(perBatch func() func(proto.Message) proto.Message) (stored uint64) {
		t.Helper()
		st, _ := s.JS.Stream(ctx, "CALLS")
		if err := st.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		p, err := publish.New(s.NC, publish.Config{Stage: "test", Node: "n", Type: &schema.CallBatch{}, MaxBatchItems: 7, Linger: time.Hour, PerBatch: perBatch}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range calls {
			if err := p.Publish(ctx, schema.CallSubject(c.Client.Node), c); err != nil {
				t.Fatal(err)
			}
			if i%10 == 9 {
				if err := p.Publish(ctx, schema.CallSubject(c.Client.Node), &schema.PodEnded{Pod: c.Client.Pod, EndedUnixNano: uint64(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if i%10 == 4 {
				if err := p.Publish(ctx, schema.CallSubject(c.Client.Node), &schema.PodChanged{Pod: c.Server.Pod, ChangedUnixNano: uint64(i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		info, _ := st.Info(ctx)
		got := map[string]*schema.Call{}
		var ended []*schema.PodEnded
		var changed []*schema.PodChanged
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			b, err := schema.DecodeCallBatch(m.Data) // this message alone
			if err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
			for _, c := range b.GetCalls() {
				got[c.GetId()] = c
			}
			ended = append(ended, b.GetPodsEnded()...)
			changed = append(changed, b.GetPodsChanged()...)
		}
		if len(changed) != len(calls)/10 {
			t.Fatalf("%d changed pods stored, want %d", len(changed), len(calls)/10)
		}
		for _, e := range changed {
			i := int(e.GetChangedUnixNano())
			if !proto.Equal(e.GetPod(), calls[i].Server.Pod) {
				t.Fatalf("changed pod %d stored as %v, want %v", i, e.GetPod(), calls[i].Server.Pod)
			}
		}
		if len(ended) != len(calls)/10 {
			t.Fatalf("%d ended pods stored, want %d", len(ended), len(calls)/10)
		}
		for _, e := range ended {
			i := int(e.GetEndedUnixNano())
			if !proto.Equal(e.GetPod(), calls[i].Client.Pod) {
				t.Fatalf("ended pod %d stored as %v, want %v", i, e.GetPod(), calls[i].Client.Pod)
			}
		}
		if len(got) != len(calls) {
			t.Fatalf("%d calls stored, want %d", len(got), len(calls))
		}
		for _, c := range calls {
			if !proto.Equal(got[c.GetId()], c) {
				t.Fatalf("call %s stored as\n%v\nwant\n%v", c.GetId(), got[c.GetId()], c)
			}
		}
		return info.State.Bytes
	}
	whole := publishAll(nil)
	compacted := publishAll(schema.NewCallCompactor)
	t.Logf("stored: %d bytes whole, %d compacted (%.2f×)", whole, compacted, float64(compacted)/float64(whole))
	if compacted >= whole*3/4 {
		t.Fatalf("compacted calls take %d bytes, whole %d", compacted, whole)
	}
}
