package graph_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/streams/schema"
)

// calls makes n calls spread over edges distinct pod pairs, encoded as
// CALLS batches of 1024.
func calls(n, edges int) [][]byte {
	var out [][]byte
	b := &schema.CallBatch{SchemaVersion: 1}
	for i := range n {
		e := i % edges
		c := &schema.Call{Id: fmt.Sprintf("tcp:n:%x:%x", i, i), Transport: schema.Transport_TRANSPORT_TCP, Port: 4222,
			BytesSent: 10, BytesReceived: 20, StartUnixNano: uint64(i), EndUnixNano: uint64(i + 1),
			Client: &schema.Endpoint{Node: "a", Pod: &schema.Pod{Uid: fmt.Sprintf("c%d", e), Name: "c", Namespace: "ns", Node: "a"}, Container: &schema.Container{Id: fmt.Sprintf("cc%d", e), Name: "app"}},
			Server: &schema.Endpoint{Node: "b", Pod: &schema.Pod{Uid: fmt.Sprintf("s%d", e%50), Name: "s", Namespace: "ns", Node: "b"}, Container: &schema.Container{Id: fmt.Sprintf("sc%d", e%50), Name: "srv"}}}
		b.Calls = append(b.Calls, c)
		if len(b.Calls) == 1024 || i == n-1 {
			data, _ := proto.Marshal(b)
			out = append(out, data)
			b = &schema.CallBatch{SchemaVersion: 1}
		}
	}
	return out
}

// BenchmarkWrites: 1,000,000 calls over 1,000 edges, flushed every 100
// messages (~100k calls, well above what one 100ms window holds at
// 300k calls/s): row upserts per flush against the naive one upsert per
// call.
func BenchmarkWrites(b *testing.B) {
	msgs := calls(1_000_000, 1000)
	for b.Loop() {
		f := graph.NewFold(graph.DefaultBrokers, nil)
		var rows, flushes, folded int
		for i, m := range msgs {
			bt, _ := schema.DecodeCallBatch(m)
			for _, c := range bt.GetCalls() {
				f.Add(c)
			}
			if i%100 == 99 || i == len(msgs)-1 {
				folded += int(f.Calls())
				rows += f.Take(uint64(i)).Rows()
				flushes++
			}
		}
		b.ReportMetric(float64(rows)/float64(flushes), "rows/flush")
		b.ReportMetric(float64(folded*3)/float64(flushes), "naive-rows/flush")
		b.ReportMetric(float64(folded*3)/float64(rows), "ratio")
	}
}

// BenchmarkReplay: 1,000,000 encoded calls decoded, folded and applied to
// an empty embedded store (the stream read itself excluded), against the
// baseline of decoding alone.
func BenchmarkReplay(b *testing.B) {
	msgs := calls(1_000_000, 1000)
	b.Run("baseline-decode", func(b *testing.B) {
		for b.Loop() {
			for _, m := range msgs {
				if _, err := schema.DecodeCallBatch(m); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/1M-calls")
	})
	b.Run("replay", func(b *testing.B) {
		for b.Loop() {
			st := memstore.New()
			f := graph.NewFold(graph.DefaultBrokers, graph.NewSeen(0))
			for i, m := range msgs {
				bt, _ := schema.DecodeCallBatch(m)
				for _, c := range bt.GetCalls() {
					f.Add(c)
				}
				if i%64 == 63 || i == len(msgs)-1 {
					if err := st.Apply(context.Background(), f.Take(uint64(i+1))); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/1M-calls")
	})
}
