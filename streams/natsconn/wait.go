package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backoff between connect attempts in ConnectWait: doubling from the
// first to the last.
const (
	FirstBackoff = 250 * time.Millisecond
	MaxBackoff   = 5 * time.Second
)

// ConnectWait connects like Connect, but a server that does not answer
// yet (a NATS pod still starting, on a fresh install) is waited for:
// attempts are retried with a doubling backoff, from FirstBackoff to
// MaxBackoff, until one succeeds or ctx ends. Before each wait it calls
// waiting (if not nil) with the attempt's number and error, so a stage
// can say on /readyz what it waits for. Options that are wrong are not
// retried.
func ConnectWait(ctx context.Context, o Options, log *slog.Logger, waiting func(attempt int, err error)) (*nats.Conn, jetstream.JetStream, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := FirstBackoff
	for attempt := 1; ; attempt++ {
		nc, js, err := Connect(ctx, o, log)
		if err == nil {
			if attempt > 1 {
				log.Info("connected to NATS", "url", o.URL, "attempts", attempt)
			}
			return nc, js, nil
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("gave up waiting for NATS after %d attempts: %w", attempt, err)
		}
		log.Warn("waiting for NATS", "url", o.URL, "attempt", attempt, "retry_in", wait, "err", err)
		if waiting != nil {
			waiting(attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("gave up waiting for NATS after %d attempts: %w", attempt, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, MaxBackoff)
	}
}
