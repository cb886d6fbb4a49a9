package graph_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/internal/scenario"
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
// call, writing every node and link of a window in each batch
// (every-batch) and leaving out those the store already holds unchanged
// (skip-written, the graph stage's way). The fleet/ runs do the same with
// calls shaped as the correlator emits them (owners, so Workload nodes
// too); theirs are larger, ~145 to a message, so ~14,500 calls a flush.
func BenchmarkWrites(b *testing.B) {
	simple := sync.OnceValue(func() [][]byte { return calls(1_000_000, 1000) })
	fleet := sync.OnceValue(func() [][]byte { return fleetCalls(1_000_000, 1000) })
	for _, tc := range []struct {
		name  string
		data  func() [][]byte
		known func() *graph.Written
	}{
		{"every-batch", simple, func() *graph.Written { return nil }},
		{"skip-written", simple, func() *graph.Written { return graph.NewWritten(0) }},
		{"fleet/every-batch", fleet, func() *graph.Written { return nil }},
		{"fleet/skip-written", fleet, func() *graph.Written { return graph.NewWritten(0) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			msgs := tc.data()
			for b.Loop() {
				f := graph.NewFold(graph.DefaultBrokers, nil)
				f.SkipWritten(tc.known())
				d := schema.NewCallDecoder()
				var rows, flushes, folded int
				for i, m := range msgs {
					bt, err := d.Decode(m)
					if err != nil {
						b.Fatal(err)
					}
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
		})
	}
}

// fleetCalls makes n calls shaped as the correlator emits them (full
// endpoints, halves) over edges pod pairs, encoded as the correlator's
// publisher seals them: at most 1024 calls or 256 KiB per message.
func fleetCalls(n, edges int) [][]byte {
	f := scenario.NewFleet(edges)
	var out [][]byte
	b := &schema.CallBatch{SchemaVersion: 1}
	size := 0
	for i := range n {
		c := &schema.Call{}
		f.Call(i, c)
		b.Calls = append(b.Calls, c)
		size += proto.Size(c) + 3
		if len(b.Calls) == 1024 || size >= 256<<10 || i == n-1 {
			data, _ := proto.Marshal(b)
			out = append(out, data)
			b, size = &schema.CallBatch{SchemaVersion: 1}, 0
		}
	}
	return out
}

// BenchmarkReplay: 1,000,000 encoded calls, shaped as the correlator
// emits them, decoded, folded and applied to an empty embedded store (the
// stream read itself excluded: see graphstage's BenchmarkReplayStream),
// against the baseline of decoding alone.
func BenchmarkReplay(b *testing.B) {
	msgs := fleetCalls(1_000_000, 1000)
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
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			d := schema.NewCallDecoder()
			for _, m := range msgs {
				if _, err := d.Decode(m); err != nil {
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
			f.SkipWritten(graph.NewWritten(0))
			d := schema.NewCallDecoder()
			for i, m := range msgs {
				bt, _ := d.Decode(m)
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
