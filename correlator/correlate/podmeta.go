package correlate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
)

// rebuildStall bounds the wait for the next pod message while the stream
// still holds some: past it the rebuild fails rather than hang a
// partition's start.
const rebuildStall = 10 * time.Second

// rebuild is what a pod index rebuild read and how long it took.
type rebuild struct {
	seq    uint64 // stream sequence of the last pod message applied; 0: none
	msgs   int
	events int
	took   time.Duration
}

// rebuildPods gives partitions that are about to start the pod history
// EVENTS holds: every node's `weft.events.*.pod` message, in stream order,
// through one ordered (ephemeral, unacked) consumer, applied to each
// part's pod index. A partition's own consumer also reads pod events, but
// only those its previous owner had not acked: without this, a partition
// that moved (or a replica that restarted) would resolve addresses
// against an empty index until each pod's next event. Each part
// remembers the sequence it was rebuilt to (part.podSeq) and skips pod
// events at or below it, so every pod event reaches its index once, in
// stream order.
//
// What a pod event says to the graph (a pod ended or changed) partition 0
// publishes when its consumer delivers the event's message. A message the
// previous owner had not acked comes again, and its pod events are passed
// over (the index has them): so for each message above partition 0's ack
// floor the rebuild keeps that news (part.news) for the delivery to
// publish. Without it, a change or a delete stored between a partition
// 0 owner's last ack and its successor's start never reaches CALLS.
//
// Under `weft replay` only the pod events before the replayed range are
// read here; the range's own come through the replay consumer.
func (s *Stage) rebuildPods(ctx context.Context, parts []*part) (rebuild, error) {
	start := time.Now()
	var r rebuild
	subject := consume.EventFilters(s.set, schema.KindPod)[0]
	st, err := s.js.Stream(ctx, s.input.Name)
	if err != nil {
		return r, fmt.Errorf("stage %s: rebuild pod index from stream %s: %w", s.set.Name, s.input.Name, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return r, nil // no pod event stored
	}
	if err != nil {
		return r, fmt.Errorf("stage %s: rebuild pod index: last %s on stream %s: %w", s.set.Name, subject, s.input.Name, err)
	}
	bound, until := last.Sequence, time.Time{}
	if rp := s.set.Replay; rp != nil {
		switch {
		case rp.StartSeq > 0:
			if rp.StartSeq <= 1 {
				return r, nil
			}
			bound = min(bound, rp.StartSeq-1)
		case !rp.StartTime.IsZero():
			until = rp.StartTime
		default:
			return r, nil // the replay reads every pod event itself
		}
	}
	// News is kept past partition 0's ack floor; none under a replay,
	// whose range starts after what is read here.
	newsFrom := uint64(math.MaxUint64)
	for _, p := range parts {
		if p.k == 0 && s.set.Replay == nil {
			if newsFrom, err = s.ackFloor(ctx, st, 0); err != nil {
				return r, err
			}
			p.news = map[uint64][]proto.Message{}
		}
	}
	cons, err := s.js.OrderedConsumer(ctx, s.input.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return r, fmt.Errorf("stage %s: rebuild pod index: consumer on %s: %w", s.set.Name, s.input.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return r, fmt.Errorf("stage %s: rebuild pod index: read %s: %w", s.set.Name, s.input.Name, err)
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, rebuildStall)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return r, fmt.Errorf("stage %s: rebuild pod index: read %s up to sequence %d, at %d: %w", s.set.Name, subject, bound, r.seq, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return r, fmt.Errorf("stage %s: rebuild pod index: %w", s.set.Name, err)
		}
		if meta.Sequence.Stream > bound || (!until.IsZero() && !meta.Timestamp.Before(until)) {
			break
		}
		r.seq, r.msgs = meta.Sequence.Stream, r.msgs+1
		// A batch that does not decode went to the DLQ from a partition's
		// consumer when it first came; here it is only passed over.
		if b, err := schema.DecodeEventBatch(m.Data()); err == nil {
			for _, ev := range b.GetEvents() {
				pe := ev.GetPod()
				if pe == nil {
					continue
				}
				r.events++
				for _, p := range parts {
					n := p.j.ApplyPod(ev.GetTimeUnixNano(), pe)
					if n != nil && p.news != nil && meta.Sequence.Stream > newsFrom {
						p.news[meta.Sequence.Stream] = append(p.news[meta.Sequence.Stream], n)
					}
				}
			}
		}
		if meta.Sequence.Stream >= bound || meta.NumPending == 0 {
			break
		}
	}
	r.took = time.Since(start)
	return r, nil
}

// ackFloor is the last stream sequence partition k's consumer acked with
// every one before it (0 when the consumer does not exist yet).
func (s *Stage) ackFloor(ctx context.Context, st jetstream.Stream, k int) (uint64, error) {
	name := s.consumerConfig(k).Durable
	if name == "" {
		name = consume.DurableName(s.set.Name, s.input.Name)
	}
	c, err := st.Consumer(ctx, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stage %s: rebuild pod index: consumer %s on %s: %w", s.set.Name, name, s.input.Name, err)
	}
	return c.CachedInfo().AckFloor.Stream, nil
}
