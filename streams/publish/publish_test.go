package publish_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/bench"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/replay"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

const subject = "weft.events.n1.tcp"

// storedCookies reads the whole EVENTS stream and counts each event's
// socket cookie (the events' identity in these tests).
func storedCookies(t *testing.T, js jetstream.JetStream) (map[uint64]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	counts := map[uint64]int{}
	msgs := 0
	_, err := replay.Read(ctx, js, "EVENTS", replay.Range{}, func(m jetstream.Msg) error {
		msgs++
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			return err
		}
		if got, want := m.Headers().Get(schema.HeaderItems), strconv.Itoa(len(b.Events)); got != want {
			return fmt.Errorf("Weft-Items %s, batch has %s", got, want)
		}
		for _, e := range b.Events {
			counts[e.GetTcp().GetSockCookie()]++
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	return counts, msgs
}

func TestPublishBatchesWithMsgIDs(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	counters := &stage.Counters{}
	p, err := publish.New(s.NC, publish.Config{Stage: "test", Node: "n1", BootID: "boot", Epoch: 7, MaxBatchItems: 1000, Linger: time.Hour}, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	events := bench.Events(2500)
	for _, e := range events {
		if err := p.Publish(ctx, subject, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counters.EventsOut.Load(); got != 2500 {
		t.Fatalf("EventsOut %d, want 2500", got)
	}
	st, _ := s.JS.Stream(ctx, "EVENTS")
	var seqs []uint64
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		b, err := schema.DecodeEventBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		o := b.GetOrigin()
		if o.GetNode() != "n1" || o.GetBootId() != "boot" || o.GetEpoch() != 7 || o.GetStage() != "test" {
			t.Fatalf("origin %v", o)
		}
		if want := publish.MsgID("n1", "boot", 7, o.GetSeq()); m.Header.Get(jetstream.MsgIDHeader) != want {
			t.Fatalf("Nats-Msg-Id %q, want %q", m.Header.Get(jetstream.MsgIDHeader), want)
		}
		if m.Header.Get(schema.HeaderType) != "weft.schema.v1.EventBatch" {
			t.Fatalf("Weft-Type %q", m.Header.Get(schema.HeaderType))
		}
		seqs = append(seqs, o.GetSeq())
	}
	if seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
		t.Fatalf("batch sequences %v, want 1 2 3", seqs)
	}
	counts, msgs := storedCookies(t, s.JS)
	if msgs != 3 || len(counts) != 2500 {
		t.Fatalf("%d messages with %d distinct events; want 3 messages (1000+1000+500), 2500 events", msgs, len(counts))
	}

	// A retry of a stored batch (same Msg-Id) is not stored again.
	m, _ := st.GetMsg(ctx, 1)
	again := nats.NewMsg(m.Subject)
	again.Header = m.Header
	again.Data = m.Data
	ack, err := s.JS.PublishMsg(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Fatal("republished batch was not recognised as a duplicate")
	}
	if info, _ := st.Info(ctx); info.State.Msgs != 3 {
		t.Fatalf("stream has %d messages after a duplicate publish, want 3", info.State.Msgs)
	}
}

func TestPublishLingerSealsPartialBatches(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	counters := &stage.Counters{}
	p, err := publish.New(s.NC, publish.Config{Node: "n1", Linger: 20 * time.Millisecond}, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	for _, e := range bench.Events(10) {
		if err := p.Publish(context.Background(), subject, e); err != nil {
			t.Fatal(err)
		}
	}
	// Ten events never fill a batch; linger alone must publish them.
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := counters.EventsOut.Load(); n != 10 {
			return fmt.Errorf("%d of 10 events published", n)
		}
		return nil
	})
}

// freeAddr returns a loopback address no one listens on, so a server can
// be restarted on the same address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPublisherSurvivesServerRestart stops the server while a publisher is
// mid-stream and starts it again on the same store: every event is stored
// exactly once, and the publisher recovered by itself.
func TestPublisherSurvivesServerRestart(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	s1 := natstest.StartIn(t, dir, addr)
	s1.CreateStream(t, "EVENTS", "weft.events.>")
	counters := &stage.Counters{}
	p, err := publish.New(s1.NC, publish.Config{Node: "n1", MaxBatchItems: 100, AckTimeout: 500 * time.Millisecond}, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	events := bench.Events(20000)
	publishRange := func(from, to int) {
		for _, e := range events[from:to] {
			if err := p.Publish(ctx, subject, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	publishRange(0, 5000)
	s1.Stop()
	publishRange(5000, 10000) // buffered: the server is down
	s2 := natstest.StartIn(t, dir, addr)
	publishRange(10000, 20000)
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("flush after restart: %v", err)
	}
	if err := p.Close(fctx); err != nil {
		t.Fatal(err)
	}
	counts, _ := storedCookies(t, s2.JS)
	if len(counts) != len(events) {
		t.Fatalf("%d of %d events stored", len(counts), len(events))
	}
	for _, e := range events {
		if n := counts[e.GetTcp().GetSockCookie()]; n != 1 {
			t.Fatalf("event %d stored %d times", e.GetTcp().GetSockCookie(), n)
		}
	}
	if d := counters.Dropped.Load(); d != 0 {
		t.Fatalf("%d events dropped within the buffer bound", d)
	}
	t.Logf("publisher retried %d publishes across the restart", p.Stats().Retries)
}

// TestPublisherCountsDropsPastBound: with the server down and a small
// buffer, what does not fit is dropped and counted, and everything else
// arrives once the server is back: stored + dropped = published.
func TestPublisherCountsDropsPastBound(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	s1 := natstest.StartIn(t, dir, addr)
	s1.CreateStream(t, "EVENTS", "weft.events.>")
	counters := &stage.Counters{}
	p, err := publish.New(s1.NC, publish.Config{
		Node: "n1", MaxBatchItems: 50, MaxBatchBytes: 16 << 10, MaxBufferedBytes: 64 << 10,
		AckTimeout: 300 * time.Millisecond, Overflow: publish.OverflowDrop,
	}, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1.Stop()
	ctx := context.Background()
	events := bench.Events(5000)
	for _, e := range events {
		if err := p.Publish(ctx, subject, e); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Stats(); st.PeakBufferedBytes > 64<<10 {
		t.Fatalf("buffered %d bytes, bound is %d", st.PeakBufferedBytes, 64<<10)
	}
	s2 := natstest.StartIn(t, dir, addr)
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.Close(fctx); err != nil {
		t.Fatal(err)
	}
	counts, _ := storedCookies(t, s2.JS)
	dropped := counters.Dropped.Load()
	if dropped == 0 {
		t.Fatal("nothing dropped: the test did not exceed the bound")
	}
	if st := p.Stats(); st.DroppedItems != dropped {
		t.Fatalf("stats say %d dropped, counters %d", st.DroppedItems, dropped)
	}
	for c, n := range counts {
		if n != 1 {
			t.Fatalf("event %d stored %d times", c, n)
		}
	}
	if got := uint64(len(counts)) + dropped; got != uint64(len(events)) {
		t.Fatalf("stored %d + dropped %d = %d, published %d", len(counts), dropped, got, len(events))
	}
}

// TestPublishBlocksWhenFull: with OverflowBlock, a full buffer makes
// Publish wait (backpressure) and give up with ctx, counting the batch.
func TestPublishBlocksWhenFull(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	counters := &stage.Counters{}
	p, err := publish.New(s.NC, publish.Config{
		Node: "n1", MaxBatchItems: 10, MaxBatchBytes: 4 << 10, MaxBufferedBytes: 8 << 10, AckTimeout: time.Hour,
	}, counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var perr error
	for _, e := range bench.Events(1000) {
		if perr = p.Publish(ctx, subject, e); perr != nil {
			break
		}
	}
	if perr == nil {
		t.Fatal("Publish never blocked with the server down and the buffer full")
	}
	if counters.Dropped.Load() == 0 {
		t.Fatal("the batch given up on was not counted")
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer ccancel()
	_ = p.Close(cctx)
}
