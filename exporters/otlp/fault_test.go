package otlp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// TestReceiverDownThenBack: the backend fails for a while, then recovers.
// Meanwhile the stage holds at most its bound of messages and the stream
// keeps the rest; afterwards every call's spans arrive exactly once, and
// every message is acked.
func TestReceiverDownThenBack(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		closed   bool // the port closed, rather than answering "unavailable"
	}{
		{otlp.ProtocolGRPC, false}, {otlp.ProtocolHTTPProtobuf, false},
		{otlp.ProtocolGRPC, true}, {otlp.ProtocolHTTPProtobuf, true},
	} {
		protocol := tc.protocol
		name := protocol + "/unavailable"
		if tc.closed {
			name = protocol + "/closed"
		}
		t.Run(name, func(t *testing.T) {
			s := newNATS(t)
			recv := otlprecv.Start(t)
			if tc.closed {
				recv.Down()
			} else {
				recv.SetFailing(true)
			}
			calls := workload(100) // 234 calls, 434 spans
			publishCalls(t, s.NC, calls, 3)

			const maxAckPending = 8
			cfg := baseConfig(recv, protocol)
			cfg.Batch.MaxItems = 8
			cfg.Batch.Exporters = 1
			cfg.Batch.Queue = 1
			cfg.Batch.MaxAckPending = maxAckPending
			_, counters := startStage(t, s, "otlp", cfg, allInputs[:1], nil)

			natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
				if n := counters.Snapshot().Errors; n < 5 {
					return fmt.Errorf("%d failed exports so far", n)
				}
				return nil
			})
			c, err := s.JS.Consumer(context.Background(), schema.StreamCalls, "otlp-CALLS")
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			snap := counters.Snapshot()
			if info.NumAckPending > maxAckPending || snap.MessagesIn > maxAckPending {
				t.Errorf("while down: %d unacked, %d messages taken: want at most %d", info.NumAckPending, snap.MessagesIn, maxAckPending)
			}
			if info.NumPending == 0 {
				t.Errorf("while down: nothing left in the stream; the stage took everything")
			}
			if snap.Acked != 0 || snap.DLQ != 0 || recv.SpanCount() != 0 {
				t.Errorf("while down: %d acked, %d dead-lettered, %d spans accepted", snap.Acked, snap.DLQ, recv.SpanCount())
			}

			if tc.closed {
				if err := recv.Up(); err != nil {
					t.Fatal(err)
				}
			} else {
				recv.SetFailing(false)
			}
			natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
				if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got < want {
					return fmt.Errorf("%d spans, want %d", got, want)
				}
				return nil
			})
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)

			seen := map[string]int{}
			for _, sp := range recv.Spans() {
				seen[sp.SpanID]++
			}
			for _, c := range calls {
				ids := otlp.IDsFor(c)
				if n := seen[ids.Client.String()]; n != 1 {
					t.Errorf("call %s: client span received %d times", c.Id, n)
				}
				if n := seen[ids.Server.String()]; c.Errno == 0 && n != 1 {
					t.Errorf("call %s: server span received %d times", c.Id, n)
				}
			}
			if got, want := len(recv.Spans()), wantSpans(calls); got != want {
				t.Errorf("%d spans received, want %d", got, want)
			}
		})
	}
}

// TestSlowBackendNoDuplicates: every export takes longer than JetStream's
// ack wait. The stage's heartbeats keep what it holds from redelivery, and
// messages redelivered anyway (those waiting in the client's buffer) are
// recognised: every span still arrives exactly once.
func TestSlowBackendNoDuplicates(t *testing.T) {
	s := newNATS(t)
	recv := otlprecv.Start(t)
	recv.SetDelay(time.Second)
	calls := workload(60)
	publishCalls(t, s.NC, calls, 3)

	cfg := baseConfig(recv, otlp.ProtocolGRPC)
	cfg.Batch.AckWait = 400 * time.Millisecond
	cfg.Batch.MaxItems = 64
	cfg.Batch.Exporters = 1
	cfg.Batch.Queue = 1
	cfg.Metrics.Enabled = new(false)
	_, counters := startStage(t, s, "otlp", cfg, allInputs[:1], nil)
	natstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got < want {
			return fmt.Errorf("%d spans, want %d", got, want)
		}
		return nil
	})
	waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
	seen := map[string]int{}
	for _, sp := range recv.Spans() {
		seen[sp.SpanID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("span %s received %d times", id, n)
		}
	}
	if got, want := len(seen), wantSpans(calls); got != want {
		t.Errorf("%d distinct spans, want %d", got, want)
	}
	if c := counters.Snapshot(); c.Redelivered == 0 {
		t.Logf("no message was redelivered (counters %+v): the duplicate path was not exercised", c)
	}
}
