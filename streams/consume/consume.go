// Package consume runs durable pull consumers with explicit acks: the one
// way a stage reads a stream. A handler returns nil once the message's
// effect is durable (the message is then acked), an error to have it
// redelivered with backoff, a Permanent error to dead-letter it at once,
// or ErrAckLater when the stage acks it itself after a batched write.
// Messages that cannot be processed go to the DLQ stream with the reason in
// a header, are acked on their source and counted; they never block the
// stream.
//
// The package owns consumer definitions and the read loop; it knows no
// stage kind and decodes nothing.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Handler processes one message.
type Handler func(ctx context.Context, m jetstream.Msg) error

// Middleware wraps a Handler; Chain applies them outermost first, as
// Watermill's router does.
type Middleware func(Handler) Handler

// Chain wraps h in mws, the first outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// ErrAckLater tells the consumer the handler took ownership of the message
// and will Ack (or dead-letter) it once its effect is durable.
var ErrAckLater = errors.New("message will be acked later by the stage")

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one a retry cannot fix (an undecodable message):
// the message goes to the DLQ at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Recover turns a panic in the handler into a Permanent error, so one
// poison message cannot crash the stage.
func Recover(next Handler) Handler {
	return func(ctx context.Context, m jetstream.Msg) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = Permanent(fmt.Errorf("handler panicked: %v", r))
			}
		}()
		return next(ctx, m)
	}
}

// Config configures a consumer.
type Config struct {
	// Stage names the consuming stage; it is the DLQ subject's last token.
	Stage string
	// Stream is the stream to read.
	Stream string
	// Durable is the consumer's durable name; default "<stage>".
	Durable string
	// FilterSubjects narrows the stream's subjects; empty means all.
	FilterSubjects []string
	// AckWait is how long the server waits for an ack before redelivering.
	// It must exceed the stage's flush interval. Default 30s.
	AckWait time.Duration
	// MaxDeliver is how many deliveries a message gets before it is
	// dead-lettered. Default 5.
	MaxDeliver int
	// MaxAckPending bounds unacked messages (and so a stage's memory).
	// Default 1024.
	MaxAckPending int
	// PullBatch is how many messages the client buffers. Default 64.
	PullBatch int
	// PullMaxBytes bounds the bytes one pull brings, whatever PullBatch
	// says: batches of large messages past the server's pending limit
	// (64 MiB) get the client cut off as a slow consumer. It must be at
	// least the largest message: it is raised to the server's max payload
	// when that is larger. Default 16 MiB.
	PullMaxBytes int
	// Backoff is the redelivery delay after the n-th failed delivery;
	// default 100ms doubling to 10s.
	Backoff func(n uint64) time.Duration
	// PinnedTTL, when set, makes the consumer a pinned-client priority
	// group (PinGroup): the server delivers to one client at a time, and
	// pins another only after the pinned one has sent no pull for this
	// long, or was unpinned (Unpin). It is how a partition is read by one
	// replica at a time. The pull expiry is a third of it (at least 1s, so
	// the TTL should be 3s or more), so a live client keeps its pin.
	PinnedTTL time.Duration
	// DeliverNew starts a new durable at the end of the stream rather than
	// its start.
	DeliverNew bool
	// Replay reads a range under a temporary durable (see stage.Replay).
	Replay *stage.Replay
}

// ConfigFor is the consumer config of stage s reading input, honouring
// s.Replay. Stages build their consumers with it and adjust the rest.
func ConfigFor(s stage.Settings, input stage.Stream) Config {
	c := Config{Stage: s.Name, Stream: input.Name, Replay: s.Replay}
	if s.Replay != nil && s.Replay.Durable != "" {
		c.Durable = s.Replay.Durable
	}
	if s.NodeLocal && input.Name == schema.StreamEvents && s.Replay == nil {
		// One durable per node, each reading its node's subjects only.
		c.Durable = DurableName(s.Name, input.Name) + "-" + schema.Token(s.Node)
		c.FilterSubjects = []string{schema.EventsPrefix + schema.Token(s.Node) + ".>"}
	}
	return c
}

// EventFilters are the EVENTS subjects of the given kinds stage s reads:
// every node's, or only its own node's when it is node-local.
func EventFilters(s stage.Settings, kinds ...string) []string {
	node := "*"
	if s.NodeLocal {
		node = schema.Token(s.Node)
	}
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = schema.EventsPrefix + node + "." + k
	}
	return out
}

// PartitionFilters are the EVENTS subjects partition p of n reads: the
// given kinds' partitioned subjects (weft.events.*.<kind>.<p>) for
// partitioned kinds, every node's subject for the others (pod and process
// events reach every partition).
func PartitionFilters(s stage.Settings, p, n int, kinds ...string) []string {
	out := EventFilters(s, kinds...)
	if n <= 1 {
		return out
	}
	for i, k := range kinds {
		if schema.Partitioned(k) {
			out[i] += "." + strconv.Itoa(p)
		}
	}
	return out
}

func (c *Config) setDefaults() {
	if c.Durable == "" {
		c.Durable = DurableName(c.Stage, c.Stream)
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 1024
	}
	if c.PullBatch <= 0 {
		c.PullBatch = 64
	}
	if c.PullMaxBytes <= 0 {
		c.PullMaxBytes = 16 << 20
	}
	if c.Backoff == nil {
		c.Backoff = func(n uint64) time.Duration {
			d := 100 * time.Millisecond << min(n, 7)
			return min(d, 10*time.Second)
		}
	}
}

// DescriptionPrefix starts every weft consumer's description, followed by
// the stage's name, so tools (and /metrics) can tell whose a consumer is.
const DescriptionPrefix = "weft stage "

// PinGroup is the priority group of a consumer with PinnedTTL.
const PinGroup = "weft"

// DurableName is the durable consumer name of stage on stream.
func DurableName(stage, stream string) string { return stage + "-" + stream }

// ConsumerConfig is the JetStream definition of c.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	c.setDefaults()
	cc := jetstream.ConsumerConfig{
		Durable:        c.Durable,
		Description:    DescriptionPrefix + c.Stage,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.AckWait,
		MaxAckPending:  c.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: c.FilterSubjects,
		// The server's own MaxDeliver is left unlimited: a message that
		// ran out of deliveries would otherwise just stop coming, silently.
		// The consumer dead-letters it itself at MaxDeliver.
		MaxDeliver: -1,
	}
	if c.DeliverNew {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if c.PinnedTTL > 0 {
		cc.PriorityGroups = []string{PinGroup}
		cc.PriorityPolicy = jetstream.PriorityPolicyPinned
		cc.PinnedTTL = c.PinnedTTL
	}
	if r := c.Replay; r != nil {
		switch {
		case r.StartSeq > 0:
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.StartSeq
		case !r.StartTime.IsZero():
			t := r.StartTime
			cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
		// A replay durable is scratch: the server removes it once idle.
		cc.InactiveThreshold = 10 * time.Minute
	}
	if len(cc.FilterSubjects) == 1 {
		cc.FilterSubject, cc.FilterSubjects = cc.FilterSubjects[0], nil
	}
	return cc
}

// Consumer is a running durable consumer.
type Consumer struct {
	cfg      Config
	js       jetstream.JetStream
	handler  Handler
	counters *stage.Counters
	log      *slog.Logger
	dlq      *DeadLetters

	it       jetstream.MessagesContext
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// Start creates or updates the durable consumer and starts reading. A
// definition change JetStream cannot apply in place is returned as an
// error naming the consumer and stream. counters and log may be nil.
func Start(ctx context.Context, js jetstream.JetStream, cfg Config, h Handler, counters *stage.Counters, log *slog.Logger) (*Consumer, error) {
	cfg.setDefaults()
	if counters == nil {
		counters = &stage.Counters{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cons, err := Ensure(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	// A pull must hold the largest message the server takes, or that
	// message would be pulled again and again and the stage would stall.
	if mp := int(js.Conn().MaxPayload()); cfg.PullMaxBytes < mp {
		cfg.PullMaxBytes = mp
	}
	opts := []jetstream.PullMessagesOpt{jetstream.PullMaxMessagesWithBytesLimit(cfg.PullBatch, cfg.PullMaxBytes)}
	if cfg.PinnedTTL > 0 {
		// The client's idle pulls must come well within the TTL, or the
		// server would unpin a live client between two of them.
		exp := min(max(cfg.PinnedTTL/3, time.Second), 30*time.Second)
		opts = append(opts, jetstream.PullPriorityGroup(PinGroup), jetstream.PullExpiry(exp), jetstream.PullHeartbeat(exp/2))
	}
	it, err := cons.Messages(opts...)
	if err != nil {
		return nil, fmt.Errorf("stage %s: read stream %s: %w", cfg.Stage, cfg.Stream, err)
	}
	c := &Consumer{
		cfg: cfg, js: js, counters: counters, log: log,
		handler: Chain(h, Recover),
		dlq:     NewDeadLetters(js, cfg.Stage, counters),
		it:      it, done: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.loop()
	return c, nil
}

// Ensure creates the durable consumer of cfg, or updates it in place.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	cfg.setDefaults()
	want := cfg.ConsumerConfig()
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, want)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeConsumerCreate {
			return nil, fmt.Errorf("stage %s: consumer %s on stream %s: the change cannot be applied in place (delete the consumer to recreate it, losing its position): %w", cfg.Stage, want.Durable, cfg.Stream, err)
		}
		return nil, fmt.Errorf("stage %s: consumer %s on stream %s: %w", cfg.Stage, want.Durable, cfg.Stream, err)
	}
	return cons, nil
}

func (c *Consumer) loop() {
	defer close(c.done)
	for {
		m, err := c.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			// Heartbeat misses and server restarts surface here; the
			// iterator keeps going by itself.
			c.log.Debug("consumer read", "stream", c.cfg.Stream, "err", err)
			continue
		}
		c.process(m)
	}
}

func (c *Consumer) process(m jetstream.Msg) {
	c.counters.MessagesIn.Add(1)
	meta, err := m.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack, nothing to redeliver.
		c.log.Warn("message without JetStream metadata", "subject", m.Subject(), "err", err)
		return
	}
	if meta.NumDelivered > 1 {
		c.counters.Redelivered.Add(1)
	}
	if r := c.cfg.Replay; r != nil && ((r.UntilSeq > 0 && meta.Sequence.Stream > r.UntilSeq) || (!r.UntilTime.IsZero() && meta.Timestamp.After(r.UntilTime))) {
		// Past the replay range: not this replay's business.
		_ = m.Ack()
		return
	}
	if n, err := strconv.Atoi(m.Headers().Get(schema.HeaderItems)); err == nil && n > 0 {
		c.counters.EventsIn.Add(uint64(n))
	}
	err = c.handler(c.ctx, m)
	switch {
	case err == nil:
		if aerr := m.Ack(); aerr != nil {
			c.log.Debug("ack", "stream", c.cfg.Stream, "seq", meta.Sequence.Stream, "err", aerr)
			return
		}
		c.counters.Acked.Add(1)
	case errors.Is(err, ErrAckLater):
	case IsPermanent(err) || meta.NumDelivered >= uint64(c.cfg.MaxDeliver):
		reason := err.Error()
		if !IsPermanent(err) {
			reason = fmt.Sprintf("gave up after %d deliveries: %v", meta.NumDelivered, err)
		}
		if derr := c.dlq.Send(c.ctx, m, reason); derr != nil {
			c.log.Warn("dead-letter failed, message will be redelivered", "stream", c.cfg.Stream, "seq", meta.Sequence.Stream, "err", derr)
			_ = m.NakWithDelay(c.cfg.Backoff(meta.NumDelivered))
			return
		}
		if aerr := m.Ack(); aerr == nil {
			c.counters.Acked.Add(1)
		}
	default:
		c.counters.Errors.Add(1)
		c.log.Debug("handler failed, redelivering", "stream", c.cfg.Stream, "seq", meta.Sequence.Stream, "delivery", meta.NumDelivered, "err", err)
		_ = m.NakWithDelay(c.cfg.Backoff(meta.NumDelivered))
	}
}

// Unpin releases the consumer's pin (PinnedTTL), so the server pins the
// next client that pulls without waiting out the TTL. Call it after Stop,
// once what this client held is acked or nakked.
func (c *Consumer) Unpin(ctx context.Context) error {
	if c.cfg.PinnedTTL <= 0 {
		return nil
	}
	st, err := c.js.Stream(ctx, c.cfg.Stream)
	if err == nil {
		err = st.UnpinConsumer(ctx, c.cfg.Durable, PinGroup)
	}
	if err != nil {
		return fmt.Errorf("stage %s: unpin consumer %s on %s: %w", c.cfg.Stage, c.cfg.Durable, c.cfg.Stream, err)
	}
	return nil
}

// DeadLetters returns the consumer's dead-letter sender, for stages that
// ack later.
func (c *Consumer) DeadLetters() *DeadLetters { return c.dlq }

// Stop stops pulling, lets the handler finish the messages already
// buffered, and returns when it has, or when ctx ends (the handler's
// context is then cancelled; unacked messages are redelivered later).
// Stop is idempotent.
func (c *Consumer) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.it.Drain() })
	select {
	case <-c.done:
		c.cancel()
		return nil
	case <-ctx.Done():
		c.cancel()
		c.it.Stop()
		<-c.done
		return fmt.Errorf("stage %s: stop consumer on %s: %w", c.cfg.Stage, c.cfg.Stream, ctx.Err())
	}
}
