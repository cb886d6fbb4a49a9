package otlp

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftobs/weft/streams/schema"
)

// msgKey identifies a stream message across redeliveries.
type msgKey struct {
	stream string
	seq    uint64
}

// batch is what the stage exports in one go, and the stream messages it
// came from, acked together once the backend accepted it.
type batch struct {
	msgs   []jetstream.Msg
	keys   []msgKey
	spans  []sdktrace.ReadOnlySpan
	logs   []sdklog.Record
	calls  []*schema.Call
	opened time.Time
	// ends are where each message's output ends in spans, logs and calls.
	ends []itemEnd

	spansDone, logsDone bool
}

type itemEnd struct{ spans, logs, calls int }

// items is the batch's size: its spans and log records, or its calls when
// only metrics are on.
func (b *batch) items() int { return max(len(b.spans)+len(b.logs), len(b.calls)) }

// batcher collects the output of messages into batches and hands sealed
// batches to the exporters. Memory is bounded: add blocks while the queue
// of sealed batches is full.
//
// It also keeps the stage from exporting a message twice when JetStream
// redelivers one the stage still holds (in a batch, or buffered in the
// client while the stage was blocked on a failing backend), or has just
// acked: such a copy is only acked, with the original.
type batcher struct {
	maxItems int
	linger   time.Duration

	mu       sync.Mutex
	cur      *batch
	inflight map[msgKey]*batch // messages taken and not yet acked
	extra    map[*batch][]jetstream.Msg
	acked    map[msgKey]struct{}
	ackedLog []msgKey // ring of acked, oldest first
	ackedPos int
	closed   bool
	senders  sync.WaitGroup // adds sending a sealed batch

	sealed chan *batch
	stop   chan struct{}
	done   chan struct{}
}

var errBatcherClosed = errors.New("otlp stage is shutting down")

func newBatcher(maxItems int, linger time.Duration, queue, remember int) *batcher {
	b := &batcher{
		maxItems: maxItems, linger: linger,
		inflight: map[msgKey]*batch{}, extra: map[*batch][]jetstream.Msg{},
		acked: map[msgKey]struct{}{}, ackedLog: make([]msgKey, remember),
		sealed: make(chan *batch, queue), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go b.lingerLoop()
	return b
}

// add takes ownership of m and what it produced. It returns once they are
// in a batch, which may wait for the exporters to take a sealed batch
// (backpressure); it fails only after close (m is then not taken). A redelivered copy of
// a message the batcher holds or has acked is taken without its output.
func (b *batcher) add(m jetstream.Msg, key msgKey, spans []sdktrace.ReadOnlySpan, logs []sdklog.Record, calls []*schema.Call) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errBatcherClosed
	}
	if _, ok := b.acked[key]; ok {
		b.mu.Unlock()
		_ = m.Ack()
		return nil
	}
	if held, ok := b.inflight[key]; ok {
		// Ack this copy with the one held.
		b.extra[held] = append(b.extra[held], m)
		b.mu.Unlock()
		return nil
	}
	if b.cur == nil {
		b.cur = &batch{opened: time.Now()}
	}
	c := b.cur
	c.msgs = append(c.msgs, m)
	c.keys = append(c.keys, key)
	c.spans = append(c.spans, spans...)
	c.logs = append(c.logs, logs...)
	c.calls = append(c.calls, calls...)
	c.ends = append(c.ends, itemEnd{len(c.spans), len(c.logs), len(c.calls)})
	b.inflight[key] = c
	var full *batch
	if c.items() >= b.maxItems {
		full, b.cur = c, nil
		b.senders.Add(1)
		defer b.senders.Done()
	}
	b.mu.Unlock()
	if full == nil {
		return nil
	}
	// m is in the batch now: the batch goes on even if ctx ends, and the
	// exporters drain the queue until it is closed, so this send ends.
	b.sealed <- full
	return nil
}

func (b *batcher) lingerLoop() {
	defer close(b.done)
	tick := time.NewTicker(max(b.linger/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			b.flushAndClose()
			return
		case <-tick.C:
			b.mu.Lock()
			var c *batch
			if b.cur != nil && time.Since(b.cur.opened) >= b.linger {
				c, b.cur = b.cur, nil
			}
			b.mu.Unlock()
			if c == nil {
				continue
			}
			select {
			case b.sealed <- c:
			case <-b.stop:
				// The exporters drain the queue during shutdown too.
				b.sealed <- c
				b.flushAndClose()
				return
			}
		}
	}
}

// flushAndClose hands over the open batch and closes the queue once no
// add is sending to it.
func (b *batcher) flushAndClose() {
	b.senders.Wait()
	b.mu.Lock()
	c := b.cur
	b.cur = nil
	b.mu.Unlock()
	if c != nil {
		b.sealed <- c
	}
	close(b.sealed)
}

// close seals the open batch and closes the queue once the batches are
// handed over; the exporters drain it. add fails after close.
func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
}

// held returns every message taken and not yet acked, for heartbeats.
func (b *batcher) held() []jetstream.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(b.inflight))
	seen := map[*batch]bool{}
	for _, bt := range b.inflight {
		if !seen[bt] {
			seen[bt] = true
			out = append(out, bt.msgs...)
			out = append(out, b.extra[bt]...)
		}
	}
	return out
}

// split replaces bt, a batch the backend refused, by one batch per
// message, so that only a message refused on its own is dead-lettered.
// What of bt the backend already took (its spans, say) stays taken.
func (b *batcher) split(bt *batch) []*batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	subs := make([]*batch, len(bt.msgs))
	byKey := make(map[msgKey]*batch, len(bt.msgs))
	var from itemEnd
	for i, m := range bt.msgs {
		to := bt.ends[i]
		sub := &batch{
			msgs: []jetstream.Msg{m}, keys: []msgKey{bt.keys[i]},
			spans: bt.spans[from.spans:to.spans], logs: bt.logs[from.logs:to.logs], calls: bt.calls[from.calls:to.calls],
			opened: bt.opened, spansDone: bt.spansDone, logsDone: bt.logsDone,
		}
		sub.ends = []itemEnd{{len(sub.spans), len(sub.logs), len(sub.calls)}}
		subs[i], byKey[bt.keys[i]] = sub, sub
		b.inflight[bt.keys[i]] = sub
		from = to
	}
	// A redelivered copy goes with its original: acked or nakked with it.
	for _, c := range b.extra[bt] {
		sub := subs[0]
		if md, err := c.Metadata(); err == nil && byKey[msgKey{md.Stream, md.Sequence.Stream}] != nil {
			sub = byKey[msgKey{md.Stream, md.Sequence.Stream}]
		}
		b.extra[sub] = append(b.extra[sub], c)
	}
	delete(b.extra, bt)
	return subs
}

// finish releases bt's messages and returns them (copies included) for
// the caller to ack (acked) or nak; acked keys are remembered so a late
// redelivery is not exported again.
func (b *batcher) finish(bt *batch, acked bool) []jetstream.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	msgs := append(bt.msgs, b.extra[bt]...)
	delete(b.extra, bt)
	for _, k := range bt.keys {
		delete(b.inflight, k)
		if acked && len(b.ackedLog) > 0 {
			old := b.ackedLog[b.ackedPos]
			delete(b.acked, old)
			b.ackedLog[b.ackedPos] = k
			b.ackedPos = (b.ackedPos + 1) % len(b.ackedLog)
			b.acked[k] = struct{}{}
		}
	}
	return msgs
}

// forget drops key from the acked messages, for one whose ack the server
// did not confirm: a redelivery of it is exported again (same ids), not
// taken for a copy.
func (b *batcher) forget(key msgKey) {
	b.mu.Lock()
	delete(b.acked, key)
	b.mu.Unlock()
}
