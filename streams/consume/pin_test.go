package consume_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestPinnedOneReaderAtATime: a durable made before pinning (an older
// weft's) becomes a pinned priority group in place; of two clients
// reading it, only the pinned one gets messages, and once it stops and
// unpins, the other gets the rest.
func TestPinnedOneReaderAtATime(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	s.CreateStream(t, "EVENTS", "weft.events.>")
	cfg := consume.Config{Stage: "correlator", Stream: "EVENTS", AckWait: 5 * time.Second}
	if _, err := consume.Ensure(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.PinnedTTL = 3 * time.Second
	var got [2]atomic.Int64
	start := func(i int) *consume.Consumer {
		c, err := consume.Start(ctx, s.JS, cfg, func(_ context.Context, _ jetstream.Msg) error {
			got[i].Add(1)
			return nil
		}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := start(0)
	b := start(1)
	defer b.Stop(ctx)
	publish := func(n int) {
		for i := range n {
			if _, err := s.JS.Publish(ctx, fmt.Sprintf("weft.events.n%d.pod", i%3), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(100)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := got[0].Load() + got[1].Load(); n != 100 {
			return fmt.Errorf("%d of 100 delivered", n)
		}
		return nil
	})
	first := 0
	if got[1].Load() > 0 {
		first = 1
	}
	if got[1-first].Load() != 0 {
		t.Fatalf("both clients got messages: %d and %d", got[0].Load(), got[1].Load())
	}
	pinned, other := a, b
	if first == 1 {
		pinned, other = b, a
	}
	if err := pinned.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pinned.Unpin(ctx); err != nil {
		t.Fatal(err)
	}
	publish(50)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := got[1-first].Load(); n != 50 {
			return fmt.Errorf("the other client got %d of 50", n)
		}
		return nil
	})
	if n := got[first].Load(); n != 100 {
		t.Fatalf("the stopped client got %d, want its 100", n)
	}
	if other == a {
		_ = a.Stop(ctx)
	}
}
