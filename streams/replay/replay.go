// Package replay reads a stored range of a stream — from a sequence or a
// time, up to a sequence or a time — with an ordered, ephemeral consumer
// that leaves no state on the server. It is how stored streams are dumped
// and how `weft replay` knows how far a range goes.
package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Range selects messages of a stream. Zero fields are open ends.
type Range struct {
	StartSeq  uint64
	StartTime time.Time
	UntilSeq  uint64    // inclusive
	UntilTime time.Time // inclusive
	// FilterSubjects narrows the stream's subjects.
	FilterSubjects []string
}

// Validate reports every problem in r.
func (r Range) Validate() error {
	var errs []error
	if r.StartSeq > 0 && !r.StartTime.IsZero() {
		errs = append(errs, errors.New("give a start sequence or a start time, not both"))
	}
	if r.UntilSeq > 0 && !r.UntilTime.IsZero() {
		errs = append(errs, errors.New("give an until sequence or an until time, not both"))
	}
	if r.StartSeq > 0 && r.UntilSeq > 0 && r.UntilSeq < r.StartSeq {
		errs = append(errs, fmt.Errorf("until sequence %d is before start sequence %d", r.UntilSeq, r.StartSeq))
	}
	if !r.StartTime.IsZero() && !r.UntilTime.IsZero() && r.UntilTime.Before(r.StartTime) {
		errs = append(errs, fmt.Errorf("until time %s is before start time %s", r.UntilTime.Format(time.RFC3339), r.StartTime.Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

// Bounds are the stream sequences a range covers, as far as can be known
// before reading: First is the first stored sequence at or after the start,
// Last the last sequence to read (the stream's last at the time of asking
// when the range has no until sequence).
type Bounds struct {
	First, Last uint64
	// State is the stream's state when the bounds were resolved.
	State jetstream.StreamState
}

// ErrEmptyRange is wrapped by Bounds.Empty's error: a range that holds no
// message of the stream.
var ErrEmptyRange = errors.New("nothing to replay")

// Empty reports, in words a user can act on, why r holds no message of
// stream, or nil when the bounds are not empty.
func (b Bounds) Empty(stream string, r Range) error {
	st := b.State
	switch {
	case b.Total() > 0:
		return nil
	case st.Msgs == 0:
		return fmt.Errorf("%w: stream %s has no messages", ErrEmptyRange, stream)
	case r.StartSeq > st.LastSeq:
		return fmt.Errorf("%w: start sequence %d is past the end of stream %s (sequences %d…%d)", ErrEmptyRange, r.StartSeq, stream, st.FirstSeq, st.LastSeq)
	case !r.StartTime.IsZero() && r.StartTime.After(st.LastTime):
		return fmt.Errorf("%w: start time %s is after the newest message of stream %s (%s)", ErrEmptyRange,
			r.StartTime.UTC().Format(time.RFC3339), stream, st.LastTime.UTC().Format(time.RFC3339))
	case r.UntilSeq > 0 && r.UntilSeq < st.FirstSeq:
		return fmt.Errorf("%w: until sequence %d is before the first message of stream %s (sequence %d)", ErrEmptyRange, r.UntilSeq, stream, st.FirstSeq)
	default:
		return fmt.Errorf("%w: stream %s has no messages in the range (sequences %d…%d)", ErrEmptyRange, stream, st.FirstSeq, st.LastSeq)
	}
}

// Total is the number of sequences in the bounds (deleted ones included).
func (b Bounds) Total() uint64 {
	if b.Last < b.First {
		return 0
	}
	return b.Last - b.First + 1
}

// Resolve finds the bounds of r on stream.
func Resolve(ctx context.Context, js jetstream.JetStream, stream string, r Range) (Bounds, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return Bounds{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Bounds{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	b := Bounds{First: max(info.State.FirstSeq, r.StartSeq), Last: info.State.LastSeq, State: info.State}
	if r.UntilSeq > 0 && r.UntilSeq < b.Last {
		b.Last = r.UntilSeq
	}
	if info.State.Msgs == 0 {
		b.First, b.Last = info.State.LastSeq+1, info.State.LastSeq
		return b, nil
	}
	if !r.UntilTime.IsZero() {
		// The last message at or before the until time.
		if after, ok := firstSeqAt(ctx, st, r.UntilTime.Add(time.Nanosecond), info.State); ok {
			b.Last = min(b.Last, after-1)
		}
	}
	if !r.StartTime.IsZero() {
		// The first message at or after the start time.
		if first, ok := firstSeqAt(ctx, st, r.StartTime, info.State); ok {
			b.First = first
		} else {
			b.First = b.Last + 1
		}
	}
	return b, nil
}

// firstSeqAt finds the first sequence stored at or after t by binary
// search over the stored messages' timestamps.
func firstSeqAt(ctx context.Context, st jetstream.Stream, t time.Time, state jetstream.StreamState) (uint64, bool) {
	lo, hi := state.FirstSeq, state.LastSeq
	if state.Msgs == 0 || state.LastTime.Before(t) {
		return 0, false
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := nextMsg(ctx, st, mid)
		if err != nil {
			return 0, false
		}
		if m.Time.Before(t) {
			lo = m.Sequence + 1
		} else {
			hi = mid
		}
	}
	return lo, true
}

// nextMsg is the first stored message at or after seq (deleted sequences
// are skipped).
func nextMsg(ctx context.Context, st jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	return st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
}

// Read calls fn for every message of r on stream, in order, and returns
// when the range is read, fn fails or ctx ends. progress, if not nil, is
// called after each message with the message's sequence and the bounds.
func Read(ctx context.Context, js jetstream.JetStream, stream string, r Range, fn func(jetstream.Msg) error, progress func(seq uint64, b Bounds)) (Bounds, error) {
	if err := r.Validate(); err != nil {
		return Bounds{}, err
	}
	b, err := Resolve(ctx, js, stream, r)
	if err != nil {
		return b, err
	}
	if b.Total() == 0 {
		return b, nil
	}
	if len(r.FilterSubjects) > 0 {
		// A consumer whose filter matches nothing from First on would
		// wait for a message forever.
		matched, err := anyAtOrAfter(ctx, js, stream, r.FilterSubjects, b)
		if err != nil || !matched {
			return b, err
		}
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    r.FilterSubjects,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       b.First,
		InactiveThreshold: time.Minute,
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return b, fmt.Errorf("replay %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return b, fmt.Errorf("replay %s: %w", stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return b, ctx.Err()
			}
			return b, fmt.Errorf("replay %s: %w", stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return b, fmt.Errorf("replay %s: %w", stream, err)
		}
		seq := meta.Sequence.Stream
		if seq > b.Last || (!r.UntilTime.IsZero() && meta.Timestamp.After(r.UntilTime)) {
			return b, nil
		}
		if err := fn(m); err != nil {
			return b, fmt.Errorf("replay %s at sequence %d: %w", stream, seq, err)
		}
		if progress != nil {
			progress(seq, b)
		}
		// NumPending counts what matches the filter after this message:
		// zero means a filtered range ends before the stream's last one.
		if seq >= b.Last || meta.NumPending == 0 {
			return b, nil
		}
	}
}

// anyAtOrAfter reports whether a message on one of subjects is stored in
// the bounds.
func anyAtOrAfter(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, b Bounds) (bool, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", stream, err)
	}
	for _, subj := range subjects {
		m, err := st.GetMsg(ctx, b.First, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("replay %s: find %s: %w", stream, subj, err)
		}
		if m.Sequence <= b.Last {
			return true, nil
		}
	}
	return false, nil
}
