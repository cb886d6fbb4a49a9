package otlp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// TestEventsConsumerReadsWhatItExports: of EVENTS, the otlp stage is
// delivered only the kinds it exports (processes and pods), not the
// connections; a node-local one (a sidecar of the collector's DaemonSet)
// only its own node's, under a durable of its own. Counted on the
// consumers, as JetStream delivered.
func TestEventsConsumerReadsWhatItExports(t *testing.T) {
	s := newNATS(t)
	recv := otlprecv.Start(t)
	ctx := context.Background()
	// One message per node and kind (a flush each).
	for _, node := range []string{"node-a", "node-b"} {
		p, err := publish.New(s.NC, publish.Config{Stage: "collector", Node: node, Type: &schema.EventBatch{}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{schema.KindTCP, schema.KindUnix, schema.KindPod, schema.KindProcess} {
			ev := &schema.Event{TimeUnixNano: uint64(time.Now().UnixNano())}
			if err := p.Publish(ctx, schema.EventSubject(node, kind), ev); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	events := []stage.Stream{{Name: schema.StreamEvents, Subjects: []string{"weft.events.>"}}}
	for _, tc := range []struct {
		name      string
		nodeLocal bool
		durable   string
		want      uint64
	}{
		{"every node", false, "otlp-EVENTS", 4},
		{"node-local", true, "node-otlp-EVENTS-node-a", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "otlp"
			if tc.nodeLocal {
				name = "node-otlp"
			}
			cfg := baseConfig(recv, otlp.ProtocolGRPC)
			st, err := otlp.New(stage.Settings{
				Name: name, Kind: otlp.KindName, Inputs: events, Config: &cfg,
				Node: "node-a", NodeLocal: tc.nodeLocal, Logger: testLogger(t), Counters: &stage.Counters{},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Start(ctx, newHost(s)); err != nil {
				t.Fatal(err)
			}
			defer st.Shutdown(ctx)
			waitAllAcked(t, s, tc.durable, schema.StreamEvents)
			natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				c, err := s.JS.Consumer(ctx, schema.StreamEvents, tc.durable)
				if err != nil {
					return err
				}
				info, err := c.Info(ctx)
				if err != nil {
					return err
				}
				if got := info.Delivered.Consumer; got != tc.want {
					return fmt.Errorf("%s delivered %d messages, want %d (filters %v)", tc.durable, got, tc.want, info.Config.FilterSubjects)
				}
				return nil
			})
		})
	}
}
