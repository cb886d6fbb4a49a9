package correlate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
)

// part is one partition of EVENTS while this replica owns it: its joiner,
// its durable consumer (pinned to this replica), and its own publisher
// fenced by the replica's lease. A part never outlives its ownership: a
// partition that moves is rebuilt by its next owner from the messages
// this one did not ack.
type part struct {
	s       *Stage
	k       int
	started time.Time
	podSeq  uint64 // pod events up to this stream sequence came from the rebuild
	// news is, by stream sequence, what the rebuild's pod events above
	// partition 0's ack floor say to the graph, published when their
	// message is delivered (Stage.rebuildPods); nil on other partitions.
	news map[uint64][]proto.Message

	mu     sync.Mutex
	j      *join.Joiner
	held   []*held
	bySeq  map[uint64]*held // held messages by stream sequence
	lastIn time.Time        // wall time of the last event
	markIn uint64           // watermark at lastIn
	broken error            // an emit failed: nothing more may be acked
	pub    *publish.Publisher
	cons   *consume.Consumer
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

type held struct {
	msg  jetstream.Msg
	seq  uint64
	hold join.Hold
}

// newPart is partition k with its joiner, not started: its pod index is
// rebuilt (Stage.rebuildPods) before start reads its consumer.
func (s *Stage) newPart(k int) *part {
	p := &part{s: s, k: k, done: make(chan struct{}), bySeq: map[uint64]*held{}}
	p.j = join.New(join.Config{Window: s.cfg.Window, CloseWait: s.cfg.CloseWait, MaxConnections: s.cfg.MaxConnections, Emit: p.emit, Ended: p.ended, Changed: p.changed})
	return p
}

// start opens the part's publisher and starts its consumer; pod events
// at or below podSeq are in its pod index already.
func (p *part) start(ctx context.Context, podSeq uint64) error {
	s, k := p.s, p.k
	p.started, p.podSeq = time.Now(), podSeq
	pub, err := publish.New(s.js.Conn(), publish.Config{Stage: s.set.Name, Node: s.set.Node, Type: &schema.CallBatch{}, Fence: s.valid,
		// What a call repeats of itself or of an earlier call of its
		// message stays off the stream; every reader's decoder puts it back.
		PerBatch: schema.NewCallCompactor}, s.set.Counters, s.log)
	if err != nil {
		return fmt.Errorf("stage %s: partition %d: %w", s.set.Name, k, err)
	}
	p.pub = pub
	p.ctx, p.cancel = context.WithCancel(context.Background())
	cons, err := consume.Start(ctx, s.js, s.consumerConfig(k), p.handle, s.set.Counters, s.log.With("partition", k))
	if err != nil {
		p.cancel()
		_ = pub.Close(ctx)
		return err
	}
	p.cons = cons
	go p.loop()
	return nil
}

func (p *part) stats() join.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.j.Stats()
}

func (p *part) emit(c *schema.Call) error {
	node := c.GetClient().GetNode()
	if node == "" {
		node = c.GetServer().GetNode()
	}
	return p.pub.Publish(p.ctx, schema.CallSubject(node), c)
}

func (p *part) handle(ctx context.Context, m jetstream.Msg) error {
	b, err := schema.DecodeEventBatch(m.Data())
	if err != nil {
		return consume.Permanent(err)
	}
	h := &held{msg: m}
	if meta, err := m.Metadata(); err == nil {
		h.seq = meta.Sequence.Stream
	}
	var bad []error
	p.mu.Lock()
	if p.broken != nil {
		// Not the message's fault (the lease ran out, a publish failed):
		// hand it back without counting a failed delivery, which would
		// dead-letter it after MaxDeliver. The part is being replaced.
		p.mu.Unlock()
		_ = m.NakWithDelay(p.s.cfg.FlushInterval * 10)
		return consume.ErrAckLater
	}
	if prev := p.bySeq[h.seq]; prev != nil && h.seq != 0 {
		// Redelivered while still held here (held past AckWait, or nakked
		// by a previous owner after it came here): its events are already
		// in the joiner. Acking this delivery would ack the message while
		// its closes still wait, so it only takes the place of the first.
		prev.msg = m
		p.mu.Unlock()
		return consume.ErrAckLater
	}
	if h.seq != 0 {
		p.bySeq[h.seq] = h
	}
	node := b.GetOrigin().GetNode()
	if node == "" {
		p.mu.Unlock()
		return consume.Permanent(errors.New("event batch without origin node"))
	}
	rebuilt := h.seq != 0 && h.seq <= p.podSeq
	if rebuilt {
		if err := p.rebuiltNews(h.seq); err != nil {
			p.broken = err
		}
	}
	for i, ev := range b.GetEvents() {
		if p.broken != nil {
			break
		}
		if rebuilt && ev.GetPod() != nil {
			continue // applied by the rebuild, in stream order
		}
		if err := p.j.Feed(node, ev, &h.hold); err != nil {
			if errors.Is(err, join.ErrMalformed) {
				bad = append(bad, fmt.Errorf("event %d: %w", i, err))
				continue
			}
			p.broken = err
			break
		}
	}
	p.lastIn, p.markIn = time.Now(), p.j.Watermark()
	p.held = append(p.held, h)
	p.mu.Unlock()
	if len(bad) > 0 {
		// The good events went on; a copy of the message goes to the DLQ
		// with the reason, the original is acked with the rest.
		reason := fmt.Sprintf("%d of %d events malformed: %v", len(bad), len(b.GetEvents()), errors.Join(bad...))
		if err := p.cons.DeadLetters().Send(ctx, m, reason); err != nil {
			p.s.log.Warn("dead-letter malformed events", "err", err)
		}
	}
	return consume.ErrAckLater
}

func (p *part) loop() {
	defer close(p.done)
	t := time.NewTicker(p.s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.flush(p.ctx, true)
		}
	}
}

// flush advances time (when expire is set), publishes what is emitted and
// acks every message whose closes all became calls.
func (p *part) flush(ctx context.Context, expire bool) {
	p.mu.Lock()
	if expire && p.broken == nil {
		// After a partition moves (or the process restarts), messages its
		// previous owner held come back within AckWait once this replica
		// holds the consumer's pin (at most the pin's TTL): until then no
		// lone half may give up its partner.
		if time.Since(p.started) > p.s.cfg.AckWait+p.s.pinnedTTL() {
			now := p.j.Watermark()
			if idle := time.Since(p.lastIn); !p.lastIn.IsZero() && idle > p.s.cfg.Window {
				// No input: let event time follow wall time.
				now = max(now, p.markIn+uint64(idle))
			}
			if err := p.j.Advance(now); err != nil {
				p.broken = err
			}
		}
	}
	var ready []*held
	keep := p.held[:0]
	for _, h := range p.held {
		if h.hold.Pending() == 0 {
			ready = append(ready, h)
			delete(p.bySeq, h.seq)
		} else {
			keep = append(keep, h)
		}
	}
	clear(p.held[len(keep):])
	p.held = keep
	broken := p.broken
	p.mu.Unlock()
	if len(ready) == 0 {
		return
	}
	if broken != nil {
		return // never ack past a lost call; redelivery rebuilds it
	}
	if err := p.pub.Flush(ctx); err != nil {
		// Fenced, or cut short because the part is stopping (its context
		// ended): a Flush cut short while it waited for buffer room has
		// dropped the batches it sealed, so the calls of ready may be
		// lost. Nothing more is acked; the messages go back (stop naks
		// them) and the next owner emits their calls again, same ids.
		if !errors.Is(err, publish.ErrFenced) {
			p.s.log.Warn("flush calls", "partition", p.k, "err", err)
		}
		p.mu.Lock()
		p.broken = err
		p.held = append(ready, p.held...)
		for _, h := range ready {
			p.bySeq[h.seq] = h
		}
		p.mu.Unlock()
		return
	}
	for _, h := range ready {
		if err := h.msg.Ack(); err == nil {
			p.s.set.Counters.Acked.Add(1)
		}
	}
}

// stop stops reading, publishes and acks what is complete (unless the
// lease is gone: the fenced publisher then sends nothing and nothing is
// acked), hands the messages still held back to the server, and unpins
// the consumer so the partition's next owner gets them at once.
func (p *part) stop(ctx context.Context) error {
	var errs []error
	p.once.Do(func() {
		if err := p.cons.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		p.cancel()
		<-p.done
		p.flush(ctx, false)
		p.mu.Lock()
		for _, h := range p.held {
			_ = h.msg.Nak()
		}
		p.held = nil
		clear(p.bySeq)
		p.mu.Unlock()
		if err := p.pub.Close(ctx); err != nil && !errors.Is(err, publish.ErrFenced) {
			errs = append(errs, err)
		}
		if err := p.cons.Unpin(ctx); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}
