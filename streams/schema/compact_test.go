package schema_test

import (
	"os"
	"path/filepath"
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
		wantSmaller := []bool{true, true, false, true, false, false}
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
