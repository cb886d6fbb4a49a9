package consume_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

func publishRaw(t *testing.T, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(schema.HeaderType, "weft.schema.v1.EventBatch")
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func goodBatch(t *testing.T, n int) []byte {
	t.Helper()
	b := &schema.EventBatch{SchemaVersion: 1, Origin: &schema.Origin{Node: "n"}}
	for i := range n {
		b.Events = append(b.Events, &schema.Event{TimeUnixNano: uint64(i + 1), Body: &schema.Event_Exit{Exit: &schema.ProcessExit{ExitCode: int32(i)}}})
	}
	data, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeHandler(count *atomic.Int64) consume.Handler {
	return func(_ context.Context, m jetstream.Msg) error {
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			return consume.Permanent(err)
		}
		count.Add(int64(len(b.Events)))
		return nil
	}
}

func setup(t *testing.T) *natstest.Server {
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	s.CreateStream(t, "DLQ", "weft.dlq.>")
	return s
}

func dlqMessages(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestUndecodableGoesToDLQ: garbage between good batches is dead-lettered
// with its reason and origin, acked on its source, counted, and the
// consumer carries on.
func TestUndecodableGoesToDLQ(t *testing.T) {
	// Registered first, so it runs after the server's cleanup: the
	// consumer and the server must leave no goroutine behind.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	s := setup(t)
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 3))
	publishRaw(t, s.JS, "weft.events.n.tcp", []byte("\xff\xfe not a batch"))
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 4))
	var events atomic.Int64
	counters := &stage.Counters{}
	c, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "sink", Stream: "EVENTS"}, decodeHandler(&events), counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if events.Load() != 7 || counters.DLQ.Load() != 1 || counters.Acked.Load() != 3 {
			return fmt.Errorf("events %d, dlq %d, acked %d", events.Load(), counters.DLQ.Load(), counters.Acked.Load())
		}
		return nil
	})
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	dl := dlqMessages(t, s.JS)
	if len(dl) != 1 {
		t.Fatalf("%d DLQ messages, want 1", len(dl))
	}
	m := dl[0]
	if m.Subject != "weft.dlq.sink" || string(m.Data) != "\xff\xfe not a batch" {
		t.Fatalf("DLQ message %q on %s", m.Data, m.Subject)
	}
	for h, want := range map[string]string{
		schema.HeaderDLQStage: "sink", schema.HeaderDLQStream: "EVENTS", schema.HeaderDLQSeq: "2",
		schema.HeaderDLQSubject: "weft.events.n.tcp", schema.HeaderType: "weft.schema.v1.EventBatch",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if r := m.Header.Get(schema.HeaderDLQReason); r == "" {
		t.Error("no reason header")
	}
	// Acked on its source: the durable has nothing pending.
	cons, _ := s.JS.Consumer(context.Background(), "EVENTS", consume.DurableName("sink", "EVENTS"))
	info, _ := cons.Info(context.Background())
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream != 3 {
		t.Fatalf("consumer pending %d, ack pending %d, ack floor %d", info.NumPending, info.NumAckPending, info.AckFloor.Stream)
	}
}

// TestTransientErrorsRetryThenDLQ: a handler error is redelivered with
// backoff; a message that keeps failing is dead-lettered after MaxDeliver,
// and the next one is processed.
func TestTransientErrorsRetryThenDLQ(t *testing.T) {
	s := setup(t)
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 1)) // fails twice, then works
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 2)) // always fails
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 5)) // works
	var mu sync.Mutex
	attempts := map[uint64]int{}
	done := map[uint64]bool{}
	h := func(_ context.Context, m jetstream.Msg) error {
		meta, _ := m.Metadata()
		seq := meta.Sequence.Stream
		mu.Lock()
		defer mu.Unlock()
		attempts[seq]++
		switch {
		case seq == 1 && attempts[seq] <= 2, seq == 2:
			return errors.New("backend unavailable")
		}
		done[seq] = true
		return nil
	}
	counters := &stage.Counters{}
	c, err := consume.Start(context.Background(), s.JS, consume.Config{
		Stage: "graph", Stream: "EVENTS", MaxDeliver: 3,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond },
	}, h, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !done[1] || !done[3] || counters.DLQ.Load() != 1 {
			return fmt.Errorf("done %v, dlq %d, attempts %v", done, counters.DLQ.Load(), attempts)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if attempts[2] != 3 {
		t.Fatalf("failing message tried %d times, want MaxDeliver=3", attempts[2])
	}
	if counters.Redelivered.Load() < 4 || counters.Errors.Load() < 4 {
		t.Fatalf("redelivered %d, errors %d; want at least 4 each", counters.Redelivered.Load(), counters.Errors.Load())
	}
	dl := dlqMessages(t, s.JS)
	if len(dl) != 1 || dl[0].Header.Get(schema.HeaderDLQSeq) != "2" {
		t.Fatalf("DLQ holds %d messages (want seq 2)", len(dl))
	}
}

// TestPanicIsDeadLettered: a handler panic costs one message, not the stage.
func TestPanicIsDeadLettered(t *testing.T) {
	s := setup(t)
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 1))
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 2))
	var ok atomic.Int64
	h := func(_ context.Context, m jetstream.Msg) error {
		meta, _ := m.Metadata()
		if meta.Sequence.Stream == 1 {
			var nilMap map[string]int
			nilMap["boom"]++
		}
		ok.Add(1)
		return nil
	}
	counters := &stage.Counters{}
	c, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "x", Stream: "EVENTS"}, h, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if ok.Load() != 1 || counters.DLQ.Load() != 1 {
			return fmt.Errorf("ok %d dlq %d", ok.Load(), counters.DLQ.Load())
		}
		return nil
	})
}

// TestAckLaterRedeliversUnacked: a message the stage holds but never acks
// (a crash before its write was durable) comes back after AckWait.
func TestAckLaterRedeliversUnacked(t *testing.T) {
	s := setup(t)
	publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 1))
	var deliveries atomic.Int64
	h := func(_ context.Context, m jetstream.Msg) error {
		if deliveries.Add(1) == 1 {
			return consume.ErrAckLater // held, then "crashed"
		}
		return nil
	}
	counters := &stage.Counters{}
	c, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "g", Stream: "EVENTS", AckWait: 300 * time.Millisecond}, h, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if deliveries.Load() < 2 || counters.Acked.Load() != 1 {
			return fmt.Errorf("deliveries %d, acked %d", deliveries.Load(), counters.Acked.Load())
		}
		return nil
	})
}

// TestDurableResumes: a second consumer with the same durable name picks
// up after what the first acked.
func TestDurableResumes(t *testing.T) {
	s := setup(t)
	for range 3 {
		publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 1))
	}
	var n1 atomic.Int64
	c1, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "sink", Stream: "EVENTS"}, decodeHandler(&n1), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n1.Load() != 3 {
			return fmt.Errorf("%d", n1.Load())
		}
		return nil
	})
	if err := c1.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		publishRaw(t, s.JS, "weft.events.n.tcp", goodBatch(t, 1))
	}
	var n2 atomic.Int64
	c2, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "sink", Stream: "EVENTS"}, decodeHandler(&n2), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop(context.Background())
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n2.Load() != 2 {
			return fmt.Errorf("second run saw %d events, want the 2 new ones", n2.Load())
		}
		return nil
	})
}

// TestConsumerChangeNotAppliableIsReported: changing what JetStream cannot
// change on a durable is an error naming it, not silently ignored.
func TestConsumerChangeNotAppliableIsReported(t *testing.T) {
	s := setup(t)
	ctx := context.Background()
	if _, err := consume.Ensure(ctx, s.JS, consume.Config{Stage: "sink", Stream: "EVENTS"}); err != nil {
		t.Fatal(err)
	}
	_, err := consume.Ensure(ctx, s.JS, consume.Config{Stage: "sink", Stream: "EVENTS", DeliverNew: true})
	if err == nil {
		t.Fatal("changing the deliver policy of a durable was accepted")
	}
	t.Log(err)
}
