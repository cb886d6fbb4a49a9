package graphstage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestGapFilled: real CALLS messages handed to the stage out of order,
// as when a delivery is lost on its way and comes again after AckWait
// (seen under load: the client cut off as a slow consumer). The stage
// folds by stream sequence and the store records only the highest, so a
// late message must not be taken for one already written. The missing
// messages are read from the stream when a later one comes first; their
// late deliveries are then held or acked as duplicates. The graph equals
// the one built from the messages in order, whatever order they came in.
func TestGapFilled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order []int // indexes of the messages, in the order delivered
		flush int   // flush (write and ack) after this many deliveries
		want  Stats // GapFilled, Skipped, Rehold
	}{
		{name: "in order", order: []int{0, 1, 2, 3, 4, 5}, flush: 3, want: Stats{}},
		{name: "one lost, redelivered after a write", order: []int{0, 2, 3, 4, 5, 1}, flush: 3, want: Stats{GapFilled: 1, Skipped: 1}},
		{name: "one lost, redelivered before the write", order: []int{0, 2, 1, 3, 4, 5}, flush: 5, want: Stats{GapFilled: 1, Rehold: 1}},
		{name: "the first lost", order: []int{3, 4, 5, 0, 1, 2}, flush: 1, want: Stats{GapFilled: 3, Skipped: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := natstest.Start(t)
			stagetest.Streams(t, s)
			var calls []*schema.Call
			for i := range 6 {
				calls = append(calls, &schema.Call{Id: fmt.Sprintf("call-%d", i), Transport: schema.Transport_TRANSPORT_TCP,
					Client: &schema.Endpoint{Node: "node-a", Address: []byte{10, 0, 0, byte(i + 1)}},
					Server: &schema.Endpoint{Node: "node-b", Address: []byte{10, 0, 1, 1}},
					Port:   80, BytesSent: uint64(100 * (i + 1)), StartUnixNano: scenario.T0 + uint64(i)*1e9, EndUnixNano: scenario.T0 + uint64(i)*1e9 + 1e6})
			}
			for _, call := range calls {
				data, err := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Calls: []*schema.Call{call}})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.JS.Publish(ctx, schema.CallSubject("node-a"), data); err != nil {
					t.Fatal(err)
				}
			}
			// The deliveries, from a real consumer.
			cons, err := s.JS.CreateConsumer(ctx, schema.StreamCalls, jetstream.ConsumerConfig{Durable: "t", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(len(calls))
			if err != nil {
				t.Fatal(err)
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			if len(msgs) != len(calls) {
				t.Fatalf("fetched %d messages, want %d", len(msgs), len(calls))
			}

			st, err := New(stage.Settings{Name: "graph", Inputs: []stage.Stream{{Name: schema.StreamCalls}}})
			if err != nil {
				t.Fatal(err)
			}
			g := st.(*Stage)
			g.mem = memstore.New()
			g.store = g.mem
			if g.str, err = s.JS.Stream(ctx, schema.StreamCalls); err != nil {
				t.Fatal(err)
			}
			g.first = 1
			for i, idx := range tc.order {
				if err := g.handle(ctx, msgs[idx]); err != nil && err.Error() != "message will be acked later by the stage" {
					t.Fatalf("delivery %d (sequence %d): %v", i, idx+1, err)
				}
				if i+1 == tc.flush {
					if err := g.flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := g.flush(ctx); err != nil {
				t.Fatal(err)
			}
			got := g.Stats()
			if got.Calls != uint64(len(calls)) || got.GapFilled != tc.want.GapFilled || got.Skipped != tc.want.Skipped || got.Rehold != tc.want.Rehold {
				t.Fatalf("stats %+v; want %d calls, %d gap-filled, %d skipped, %d held again", got, len(calls), tc.want.GapFilled, tc.want.Skipped, tc.want.Rehold)
			}
			gr, err := g.mem.Graph(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var sent float64
			for _, e := range gr.Edges {
				if e.Type == "CALLS" {
					switch n := e.Props["bytes_sent"].(type) {
					case uint64:
						sent += float64(n)
					case int64:
						sent += float64(n)
					case float64:
						sent += n
					default:
						t.Fatalf("edge %s→%s: bytes_sent %T %v", e.From, e.To, n, n)
					}
				}
			}
			if sent != 2100 {
				t.Fatalf("bytes sent on the graph's CALLS edges: %v, want 2100 (every call once)", sent)
			}
		})
	}
}
