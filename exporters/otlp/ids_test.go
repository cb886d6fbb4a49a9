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

// TestIDsForReemittedCall: a correlator restarted between the two closes
// of a connection emits it again from the side whose close it is given
// again. From the client's side the call keeps its id, the client's half,
// and so its trace and client span: the client span a backend already
// has is the same span.
func TestIDsForReemittedCall(t *testing.T) {
	joined := tcpCall(1)
	joined.Id = "tcp:node-a:2a:17d"
	joined.Halves = []string{"tcp:node-a:2a:17d", "tcp:node-b:9f:17e"}
	again := proto.Clone(joined).(*schema.Call)
	again.Halves, again.Partial = again.Halves[:1], true
	again.Server = &schema.Endpoint{Address: joined.GetServer().GetAddress(), Port: 5672, Pod: joined.GetServer().GetPod()}
	a, b := otlp.IDsFor(joined), otlp.IDsFor(again)
	if a.Trace != b.Trace || a.Client != b.Client {
		t.Errorf("re-emitted from the client side: trace %v client %v, the joined call's %v %v", b.Trace, b.Client, a.Trace, a.Client)
	}
}
