package schema_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// BenchmarkCallBatch: a 25-call message (the demo's) encoded and decoded
// whole and compacted, alternately in every iteration so both see the
// same machine: the CPU the smaller CALLS cost the correlator (encode)
// and the graph stage (CallDecoder), as a ratio. Calls share their pods
// and containers, as those of the correlator's pod index do.
func BenchmarkCallBatch(b *testing.B) {
	var calls []*schema.Call
	for i := 0; len(calls) < 25; i++ {
		calls = append(calls, decoderCalls(i)[:4]...)
	}
	calls = calls[:25]
	pods := map[string]*schema.Pod{}
	ctrs := map[string]*schema.Container{}
	for _, c := range calls {
		for _, e := range []*schema.Endpoint{c.GetClient(), c.GetServer()} {
			if p := e.GetPod(); p != nil {
				if pods[p.GetUid()] == nil {
					pods[p.GetUid()] = p
				}
				e.Pod = pods[p.GetUid()]
			}
			if k := e.GetContainer(); k != nil {
				if ctrs[k.GetId()] == nil {
					ctrs[k.GetId()] = k
				}
				e.Container = ctrs[k.GetId()]
			}
		}
	}
	encode := func(compact bool) []byte {
		out := make([]*schema.Call, len(calls))
		f := schema.NewCallCompactor()
		for i, c := range calls {
			out[i] = c
			if compact {
				out[i] = f(c).(*schema.Call)
			}
		}
		data, err := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Calls: out})
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	whole, compact := encode(false), encode(true)
	dw, dc := schema.NewCallDecoder(), schema.NewCallDecoder()
	var encW, encC, decW, decC time.Duration
	for b.Loop() {
		t0 := time.Now()
		encode(false)
		t1 := time.Now()
		encode(true)
		t2 := time.Now()
		if _, err := dw.Decode(whole); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if _, err := dc.Decode(compact); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		encW, encC, decW, decC = encW+t1.Sub(t0), encC+t2.Sub(t1), decW+t3.Sub(t2), decC+t4.Sub(t3)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*len(calls)) }
	b.ReportMetric(float64(len(whole))/float64(len(calls)), "bytes/call-whole")
	b.ReportMetric(float64(len(compact))/float64(len(calls)), "bytes/call-compact")
	b.ReportMetric(per(encW), "encode-ns/call-whole")
	b.ReportMetric(per(encC), "encode-ns/call-compact")
	b.ReportMetric(per(decW), "decode-ns/call-whole")
	b.ReportMetric(per(decC), "decode-ns/call-compact")
	b.ReportMetric(float64(encC)/float64(encW), "encode-ratio")
	b.ReportMetric(float64(decC)/float64(decW), "decode-ratio")
}
