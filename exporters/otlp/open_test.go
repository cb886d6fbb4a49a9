package otlp_test

import (
	"testing"
	"time"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
)

// TestOpenConnectionSpans: a connection emitted while open (OPEN, two
// PROGRESS, CLOSE) is one trace: the OPEN's span pair has the ids a whole
// call would, each later emission's spans cover the interval since the
// previous one, children of the OPEN's client span, and their byte
// attributes add up to the connection's totals.
func TestOpenConnectionSpans(t *testing.T) {
	whole := tcpCall(7)
	start := whole.GetStartUnixNano()
	sec := uint64(time.Second)
	at := func(state schema.CallState, suffix string, sent, recv, priorS, priorR, since, end uint64) *schema.Call {
		c := tcpCall(7)
		c.Id += suffix
		c.State = state
		c.BytesSent, c.BytesReceived, c.PriorBytesSent, c.PriorBytesReceived = sent, recv, priorS, priorR
		c.SinceUnixNano, c.EndUnixNano = since, end
		return c
	}
	emissions := []*schema.Call{
		at(schema.CallState_CALL_STATE_OPEN, "", 0, 0, 0, 0, 0, start+sec/4),
		at(schema.CallState_CALL_STATE_PROGRESS, "#p1", 100, 1000, 0, 0, start+sec/4, start+sec),
		at(schema.CallState_CALL_STATE_PROGRESS, "#p2", 300, 1500, 100, 1000, start+sec, start+2*sec),
		at(schema.CallState_CALL_STATE_CLOSE, "#c", 310, 1600, 300, 1500, start+2*sec, start+30*sec),
	}
	m := otlp.NewSpanMapper()
	ids := otlp.IDsFor(whole)
	var sent, recv int64
	prevEnd := time.Unix(0, int64(start))
	for i, c := range emissions {
		spans := m.AppendSpans(nil, c)
		if len(spans) != 2 {
			t.Fatalf("emission %d: %d spans, want client and server", i, len(spans))
		}
		cl, sv := spans[0], spans[1]
		if cl.SpanContext().TraceID() != ids.Trace || sv.SpanContext().TraceID() != ids.Trace {
			t.Errorf("emission %d: trace %v, want the connection's %v", i, cl.SpanContext().TraceID(), ids.Trace)
		}
		if sv.Parent().SpanID() != cl.SpanContext().SpanID() {
			t.Errorf("emission %d: server span's parent %v, want its client span %v", i, sv.Parent().SpanID(), cl.SpanContext().SpanID())
		}
		if i == 0 {
			if cl.SpanContext().SpanID() != ids.Client || cl.Parent().IsValid() {
				t.Errorf("OPEN: client span %v parent %v, want %v with no parent", cl.SpanContext().SpanID(), cl.Parent(), ids.Client)
			}
		} else if cl.Parent().SpanID() != ids.Client || cl.SpanContext().SpanID() == ids.Client {
			t.Errorf("emission %d: client span %v parent %v, want its own under the OPEN's %v", i, cl.SpanContext().SpanID(), cl.Parent().SpanID(), ids.Client)
		}
		if !cl.StartTime().Equal(prevEnd) || !cl.EndTime().Equal(time.Unix(0, int64(c.GetEndUnixNano()))) {
			t.Errorf("emission %d: span %v..%v, want from the previous end %v to %v", i, cl.StartTime(), cl.EndTime(), prevEnd, time.Unix(0, int64(c.GetEndUnixNano())))
		}
		prevEnd = cl.EndTime()
		for _, a := range cl.Attributes() {
			switch a.Key {
			case "weft.connection.bytes_sent":
				sent += a.Value.AsInt64()
			case "weft.connection.bytes_received":
				recv += a.Value.AsInt64()
			}
		}
	}
	if sent != 310 || recv != 1600 {
		t.Errorf("bytes over the spans %d/%d, want the totals 310/1600", sent, recv)
	}
	// A whole call is unchanged: no parent, no connection attributes.
	s := m.AppendSpans(nil, whole)[0]
	if s.Parent().IsValid() || s.SpanContext().SpanID() != ids.Client {
		t.Errorf("whole call: span %v parent %v", s.SpanContext().SpanID(), s.Parent())
	}
	for _, a := range s.Attributes() {
		if a.Key == "weft.connection.state" {
			t.Errorf("whole call carries %v", a)
		}
	}
}
