package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
)

// Backoff between looks in WaitStreams: doubling from the first to the
// last.
const (
	FirstWait = 250 * time.Millisecond
	MaxWait   = 5 * time.Second
)

// Creators are the stages of t that create its streams when they start
// (every stage that is not node-local): a process that runs only
// node-local stages waits for them (WaitStreams) instead of creating the
// streams itself, which the chart's NATS does not allow it.
func Creators(t *topology.Topology) []string {
	var out []string
	for _, s := range t.Stages {
		if !t.NodeLocal(s) {
			out = append(out, s.Name)
		}
	}
	return out
}

// StreamsOf are the streams stages of t read or write, with the DLQ
// they dead-letter to, sorted.
func StreamsOf(t *topology.Topology, stages []string) []string {
	var out []string
	for _, n := range stages {
		if def := t.Stage(n); def != nil {
			out = append(out, def.Inputs...)
			out = append(out, def.Outputs...)
		}
	}
	if dlq := t.Stream(schema.StreamDLQ); dlq != nil {
		out = append(out, dlq.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// WaitStreams returns once every stream of names exists, looking again
// with a doubling backoff from FirstWait to MaxWait, or ctx's error.
// Before each wait it calls waiting (if not nil) with the attempt's
// number and the streams still missing, so a stage can say on /readyz
// what it waits for.
func WaitStreams(ctx context.Context, js jetstream.JetStream, names []string, waiting func(attempt int, missing []string)) error {
	wait := FirstWait
	for attempt := 1; ; attempt++ {
		var missing []string
		var errs []error
		for _, n := range names {
			lctx, cancel := context.WithTimeout(ctx, MaxWait)
			_, err := js.Stream(lctx, n)
			cancel()
			switch {
			case err == nil:
			case errors.Is(err, jetstream.ErrStreamNotFound):
				missing = append(missing, n)
			default:
				missing = append(missing, n)
				errs = append(errs, fmt.Errorf("stream %s: %w", n, err))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if ctx.Err() == nil && waiting != nil {
			waiting(attempt, missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for streams %v after %d attempts: %w", missing, attempt, errors.Join(append(errs, ctx.Err())...))
		case <-time.After(wait):
		}
		wait = min(2*wait, MaxWait)
	}
}
