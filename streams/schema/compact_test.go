package schema_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// TestCompactCallRoundTrip: a call written compacted reads back, through
// DecodeCallBatch and CallDecoder, as the call it was; it is smaller when
// it repeated itself, and CompactCall leaves its argument alone.
func TestCompactCallRoundTrip(t *testing.T) {
	d := schema.NewCallDecoder()
	for i := range 3 {
		calls := decoderCalls(i)
		orig := make([]*schema.Call, len(calls))
		compact := make([]*schema.Call, len(calls))
		for j, c := range calls {
			orig[j] = proto.Clone(c).(*schema.Call)
			compact[j] = schema.CompactCall(c)
			if !proto.Equal(c, orig[j]) {
				t.Fatalf("call %d: CompactCall modified its argument", j)
			}
		}
		// What each shape leaves out, by its index in decoderCalls.
		wantSmaller := []bool{true, true, false, true, false, false, false}
		for j := range calls {
			saved := proto.Size(orig[j]) - proto.Size(compact[j])
			if wantSmaller[j] != (saved > 0) {
				t.Errorf("call %d: %d bytes → %d", j, proto.Size(orig[j]), proto.Size(compact[j]))
			}
			if !wantSmaller[j] && compact[j] != calls[j] {
				t.Errorf("call %d: nothing to leave out, yet copied", j)
			}
		}
		data := encodedCallBatch(t, compact)
		for name, decode := range map[string]func([]byte) (*schema.CallBatch, error){
			"DecodeCallBatch": schema.DecodeCallBatch, "CallDecoder": d.Decode,
		} {
			b, err := decode(data)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for j, c := range b.GetCalls() {
				if !proto.Equal(c, orig[j]) {
					t.Errorf("%s, call %d:\n got %v\nwant %v", name, j, c, orig[j])
				}
			}
		}
		sameDecode(t, d, data)
	}

	// Compacting twice changes nothing more; the first half kept when it
	// is not the id.
	c := decoderCalls(0)[0]
	once := schema.CompactCall(c)
	if twice := schema.CompactCall(once); twice != once {
		t.Error("a compacted call compacted again")
	}
	other := &schema.Call{Id: "a", Halves: []string{"b", "a"}}
	if schema.CompactCall(other) != other {
		t.Error("halves not starting with the id were compacted")
	}
}

// TestV1CallFixtureThroughCallDecoder: the fast decoder reads the frozen
// version-1 CALLS message as DecodeCallBatch does (replay of old CALLS).
func TestV1CallFixtureThroughCallDecoder(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "v1_call_batch.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := schema.NewCallDecoder().Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, v1CallBatch()) {
		t.Fatalf("decoded\n%v\nwant\n%v", got, v1CallBatch())
	}
}

// TestCallCompactor: the calls of one message, compacted in order by one
// compactor, read back as they were through both decoders, smaller than
// calls compacted alone; a pod that changes within the message is carried
// whole again; a message leaning on a pod it does not carry is refused
// with the call named.
func TestCallCompactor(t *testing.T) {
	var orig []*schema.Call
	for i := range 20 {
		orig = append(orig, decoderCalls(i)...)
	}
	// The pod of call 0 again, relabelled, under the same uid, twice: the
	// second leans on the first, not on the pod as it was before.
	moved := proto.Clone(orig[0]).(*schema.Call)
	moved.Client.Pod.Labels["tier"] = "db"
	moved.Client.Container = moved.Client.Pod.Containers[0]
	orig = append(orig, moved, proto.Clone(moved).(*schema.Call))

	want := make([]*schema.Call, len(orig))
	alone := make([]*schema.Call, len(orig))
	inBatch := make([]*schema.Call, len(orig))
	compact := schema.NewCallCompactor()
	for i, c := range orig {
		want[i] = proto.Clone(c).(*schema.Call)
		alone[i] = schema.CompactCall(c)
		inBatch[i] = compact(c).(*schema.Call)
		if !proto.Equal(c, want[i]) {
			t.Fatalf("call %d: the compactor modified its argument", i)
		}
	}
	data := encodedCallBatch(t, inBatch)
	if a := len(encodedCallBatch(t, alone)); len(data) >= a*3/4 {
		t.Errorf("compacted in a batch: %d bytes, alone: %d", len(data), a)
	}
	d := schema.NewCallDecoder()
	for name, decode := range map[string]func([]byte) (*schema.CallBatch, error){
		"DecodeCallBatch": schema.DecodeCallBatch, "CallDecoder": d.Decode,
	} {
		b, err := decode(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(b.GetCalls()) != len(want) {
			t.Fatalf("%s: %d calls, want %d", name, len(b.GetCalls()), len(want))
		}
		for i, c := range b.GetCalls() {
			if !proto.Equal(c, want[i]) {
				t.Errorf("%s, call %d:\n got %v\nwant %v", name, i, c, want[i])
			}
		}
	}
	sameDecode(t, d, data)
	if last := inBatch[len(inBatch)-1].GetClient(); !last.GetPodInBatch() || !last.GetContainerInBatch() || inBatch[len(inBatch)-2].GetClient().GetPodInBatch() {
		t.Errorf("a changed pod leant on the old one, or the same pod again was carried whole")
	}

	// Each message stands alone: the second message's compactor knows
	// nothing of the first.
	second := schema.NewCallCompactor()(orig[0]).(*schema.Call)
	if second.GetClient().GetPodInBatch() {
		t.Error("a new message's first call leans on an earlier message")
	}

	// A message leaning on a pod it does not carry.
	dangling := encodedCallBatch(t, inBatch[len(inBatch)-1:])
	_, err := schema.DecodeCallBatch(dangling)
	if err == nil || !strings.Contains(err.Error(), `call 0 client: its pod "uid-0" or container "c1" is carried by no earlier call of the message`) {
		t.Errorf("dangling reference: %v", err)
	}
	sameDecode(t, d, dangling)
}
