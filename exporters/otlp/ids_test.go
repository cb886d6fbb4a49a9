package otlp_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
)

func TestIDsForDeterministic(t *testing.T) {
	seen := map[string]string{}
	for _, c := range workload(300) {
		a := otlp.IDsFor(c)
		b := otlp.IDsFor(proto.Clone(c).(*schema.Call))
		if a != b {
			t.Fatalf("call %s: ids %v then %v", c.Id, a, b)
		}
		if !a.Trace.IsValid() || !a.Client.IsValid() || !a.Server.IsValid() || a.Client == a.Server {
			t.Fatalf("call %s: invalid ids %v", c.Id, a)
		}
		for _, id := range []string{a.Trace.String(), a.Client.String(), a.Server.String()} {
			if other, dup := seen[id]; dup {
				t.Fatalf("id %s of call %s also belongs to %s", id, c.Id, other)
			}
			seen[id] = c.Id
		}
	}
	// A call without an id (a writer bug) still gets stable ids, from its
	// content.
	c := tcpCall(1)
	c.Id = ""
	if otlp.IDsFor(c) != otlp.IDsFor(proto.Clone(c).(*schema.Call)) {
		t.Error("id-less call: ids differ between two identical calls")
	}
	d := tcpCall(2)
	d.Id = ""
	if otlp.IDsFor(c) == otlp.IDsFor(d) {
		t.Error("id-less calls: two different calls share ids")
	}
}
