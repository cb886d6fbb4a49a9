package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/schema"
)

// Outcome is what a redrive did with one letter.
type Outcome struct {
	Letter Letter
	// Err is nil when the letter was republished to its original subject
	// (or found already republished) and removed from the DLQ; otherwise
	// why it was not.
	Err error
	// Requeued: the redrive failed and the letter is back in the DLQ, in
	// a new message whose reason is Err; the old one is removed.
	// Without it (and with Err) the letter is still in the DLQ as it was.
	Requeued bool
}

// RedriveOptions configure Redrive.
type RedriveOptions struct {
	// NATS is how to reach the server; Redrive opens its own connections
	// (Watermill's subscriber drains its connection when it closes).
	NATS natsconn.Options
	// Logger gets Watermill's log at debug level. Default: discard.
	Logger *slog.Logger
	// Retries is how many times a failed republish is retried before the
	// letter goes back to the DLQ. Default 2.
	Retries int
}

// maxDeliveries bounds how often one letter is handled in a run when even
// putting it back in the DLQ fails; it is then left where it was.
const maxDeliveries = 3

// Redrive sends letters (from Scan) back to the subjects they were first
// published on, each under RedriveMsgID so a redrive interrupted and run
// again is deduplicated, and removes each from the DLQ once the publish is
// acked. A letter whose publish fails again, after retries, goes back to
// the DLQ with the new reason (Watermill's poison queue) and the old copy
// is removed. It returns one outcome per letter, in letters' order, when
// every letter has one or ctx ends.
//
// Redrive is a Watermill router with one handler per stage, each reading
// that stage's DLQ subject. Middleware, outermost first: track (skips what
// this run did not select, removes a handled letter from the DLQ), poison
// queue, retry, recoverer.
func Redrive(ctx context.Context, js jetstream.JetStream, letters []Letter, o RedriveOptions) ([]Outcome, error) {
	if len(letters) == 0 {
		return nil, nil
	}
	if o.Retries <= 0 {
		o.Retries = 2
	}
	wlog := watermill.LoggerAdapter(watermill.NopLogger{})
	if o.Logger != nil && o.Logger.Enabled(ctx, slog.LevelDebug) {
		wlog = watermill.NewSlogLogger(o.Logger)
	}
	r := &redriver{ctx: ctx, js: js, scope: map[string]*letterState{}, finished: make(chan struct{})}
	dlq, err := js.Stream(ctx, schema.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", schema.StreamDLQ, err)
	}
	firstByStage := map[string]uint64{}
	var stages []string
	for _, l := range letters {
		st := &letterState{letter: l}
		r.scope[strconv.FormatUint(l.Seq, 10)] = st
		// A letter removed since the scan (by another redrive) would never
		// be delivered; it has nothing left to do.
		if _, err := dlq.GetMsg(ctx, l.Seq); errors.Is(err, jetstream.ErrMsgNotFound) {
			st.done, st.err = true, errors.New("no longer in the DLQ")
			continue
		} else if err != nil {
			return nil, fmt.Errorf("read DLQ sequence %d: %w", l.Seq, err)
		}
		r.pending++
		if _, ok := firstByStage[l.Stage]; !ok {
			stages = append(stages, l.Stage)
			firstByStage[l.Stage] = l.Seq
		}
	}
	if r.pending == 0 {
		return r.outcomes(letters), nil
	}

	pubOpts, subOpts := o.NATS, o.NATS
	pubOpts.Name, subOpts.Name = "weft dlq redrive (publish)", "weft dlq redrive (consume)"
	pubNC, _, err := natsconn.Connect(ctx, pubOpts, o.Logger)
	if err != nil {
		return nil, err
	}
	defer pubNC.Close()
	subNC, _, err := natsconn.Connect(ctx, subOpts, o.Logger)
	if err != nil {
		return nil, err
	}
	defer subNC.Close()

	// The adapter publishes to the "stream name" its configurator gives a
	// topic; naming it after the topic makes the topic the subject.
	pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{
		Conn: pubNC, Logger: wlog,
		ConfigureStream: func(topic string) jetstream.StreamConfig { return jetstream.StreamConfig{Name: topic} },
	})
	if err != nil {
		return nil, fmt.Errorf("redrive publisher: %w", err)
	}
	r.pub = pub
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn: subNC, Logger: wlog,
		AckWaitTimeout: time.Minute,
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			return dlqConsumer(ctx, js, topic, firstByStage[strings.TrimPrefix(topic, schema.DLQPrefix)])
		},
		ConfigureStream: func(string) jetstream.StreamConfig { return jetstream.StreamConfig{Name: schema.StreamDLQ} },
		Unmarshaler:     unmarshaler{},
	})
	if err != nil {
		return nil, fmt.Errorf("redrive subscriber: %w", err)
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("redrive router: %w", err)
	}
	router.AddMiddleware(r.track)
	for _, st := range stages {
		subject := schema.DLQSubject(st)
		h := router.AddConsumerHandler("redrive-"+st, subject, sub, r.republish)
		poison, err := middleware.PoisonQueue(requeuePublisher{r: r, pub: pub}, subject)
		if err != nil {
			return nil, fmt.Errorf("redrive poison queue: %w", err)
		}
		h.AddMiddleware(poison, middleware.Retry{
			MaxRetries:      o.Retries,
			InitialInterval: 100 * time.Millisecond,
			Multiplier:      2,
			MaxInterval:     2 * time.Second,
		}.Middleware, middleware.Recoverer)
	}

	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-r.finished:
	case <-ctx.Done():
	case err := <-runErr:
		return r.outcomes(letters), fmt.Errorf("redrive: router stopped: %w", err)
	}
	cerr := router.Close()
	if err := <-runErr; err != nil {
		cerr = errors.Join(cerr, err)
	}
	if ctx.Err() != nil {
		return r.outcomes(letters), fmt.Errorf("redrive interrupted: %w", ctx.Err())
	}
	if cerr != nil {
		return r.outcomes(letters), fmt.Errorf("redrive: stop router: %w", cerr)
	}
	return r.outcomes(letters), nil
}

// dlqConsumer is an ephemeral consumer of one stage's DLQ subject from the
// first letter this run redrives; it is deleted when the handler stops.
func dlqConsumer(ctx context.Context, js jetstream.JetStream, subject string, first uint64) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
	st, err := js.Stream(ctx, schema.StreamDLQ)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s: %w", schema.StreamDLQ, err)
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(first, 1),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           2 * time.Minute,
		MaxAckPending:     1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("redrive consumer on %s: %w", subject, err)
	}
	name := cons.CachedInfo().Name
	return cons, func(ctx context.Context, log watermill.LoggerAdapter) {
		if err := st.DeleteConsumer(context.WithoutCancel(ctx), name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			log.Error("delete redrive consumer", err, watermill.LogFields{"consumer": name})
		}
	}, nil
}

// unmarshaler makes a Watermill message of a DLQ message: its UUID is the
// DLQ sequence, its metadata the headers (first value of each). It never
// fails: the adapter would hand the router a nil message.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	id := ""
	if meta, err := m.Metadata(); err == nil {
		id = strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	wm := message.NewMessage(id, m.Data())
	for k, vs := range m.Headers() {
		if len(vs) > 0 {
			wm.Metadata.Set(k, vs[0])
		}
	}
	return wm, nil
}

type letterState struct {
	letter   Letter
	attempts int
	done     bool
	err      error // the last failure
	requeued bool
}

type redriver struct {
	ctx context.Context
	js  jetstream.JetStream // removes letters from the DLQ
	pub message.Publisher
	// scope holds this run's letters by DLQ sequence; it is not changed
	// once the router runs (the states in it are, under mu).
	scope    map[string]*letterState
	mu       sync.Mutex
	pending  int
	finished chan struct{} // closed when no letter is pending
}

// track is the outermost middleware: it skips messages this run did not
// select (newer letters, the copies it requeues, other reasons), removes a
// handled letter from the DLQ, and records each letter's outcome.
func (r *redriver) track(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		st, ok := r.scope[msg.UUID]
		if !ok {
			return nil, nil
		}
		r.mu.Lock()
		done := st.done
		r.mu.Unlock()
		if done {
			return nil, nil
		}
		_, err := h(msg)
		if err == nil {
			err = r.remove(st.letter.Seq)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			st.attempts++
			st.requeued = false
			if st.attempts < maxDeliveries {
				return nil, err // redelivered
			}
			st.err = errors.Join(st.err, err)
		}
		st.done = true
		r.pending--
		if r.pending == 0 {
			close(r.finished)
		}
		return nil, nil
	}
}

func (r *redriver) remove(seq uint64) error {
	st, err := r.js.Stream(r.ctx, schema.StreamDLQ)
	if err == nil {
		err = st.DeleteMsg(r.ctx, seq)
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove sequence %d from %s: %w", seq, schema.StreamDLQ, err)
	}
	return nil
}

// republish is the handler: it publishes the letter to its original
// subject, into its original stream only, and returns once the server has
// acked it.
func (r *redriver) republish(msg *message.Message) error {
	st := r.scope[msg.UUID]
	l := st.letter
	err := func() error {
		if l.Stream == "" || l.Subject == "" {
			return fmt.Errorf("dead letter %d names no original stream or subject (headers %s, %s)", l.Seq, schema.HeaderDLQStream, schema.HeaderDLQSubject)
		}
		id := RedriveMsgID(l.FirstSeq)
		out := message.NewMessage(id, msg.Payload)
		for k, v := range msg.Metadata {
			if !strings.HasPrefix(k, "Weft-Dlq-") && !strings.HasPrefix(k, "Nats-Expected-") && k != wmnats.WatermillUUIDHdr {
				out.Metadata.Set(k, v)
			}
		}
		out.Metadata.Set(jetstream.MsgIDHeader, id)
		out.Metadata.Set(jetstream.ExpectedStreamHeader, l.Stream)
		if err := r.pub.Publish(l.Subject, out); err != nil {
			return fmt.Errorf("republish to %s in stream %s: %w", l.Subject, l.Stream, err)
		}
		return nil
	}()
	r.mu.Lock()
	st.err = err
	r.mu.Unlock()
	return err
}

// requeuePublisher is the poison queue's publisher: it puts a letter whose
// redrive failed back in the DLQ with the failure as its reason, keeping
// where it came from and its first DLQ sequence.
type requeuePublisher struct {
	r   *redriver
	pub message.Publisher
}

func (p requeuePublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		st, ok := p.r.scope[m.UUID]
		if !ok {
			return fmt.Errorf("requeue message %q: not one this redrive selected", m.UUID)
		}
		l := st.letter
		out := message.NewMessage(requeueMsgID(l.Seq), m.Payload)
		for k, v := range m.Metadata {
			switch k {
			case middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey,
				middleware.PoisonedSubscriberKey, wmnats.WatermillUUIDHdr:
				continue
			}
			if strings.HasPrefix(k, "Nats-Expected-") {
				continue
			}
			out.Metadata.Set(k, v)
		}
		out.Metadata.Set(schema.HeaderDLQReason, "redrive failed: "+m.Metadata.Get(middleware.ReasonForPoisonedKey))
		out.Metadata.Set(schema.HeaderDLQFirstSeq, strconv.FormatUint(l.FirstSeq, 10))
		out.Metadata.Set(jetstream.MsgIDHeader, requeueMsgID(l.Seq))
		out.Metadata.Set(jetstream.ExpectedStreamHeader, schema.StreamDLQ)
		if err := p.pub.Publish(topic, out); err != nil {
			return fmt.Errorf("requeue DLQ sequence %d to %s: %w", l.Seq, topic, err)
		}
		p.r.mu.Lock()
		st.requeued = true
		p.r.mu.Unlock()
	}
	return nil
}

// Close does nothing: Redrive owns the publisher.
func (requeuePublisher) Close() error { return nil }

func (r *redriver) outcomes(letters []Letter) []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Outcome, 0, len(letters))
	for _, l := range letters {
		st := r.scope[strconv.FormatUint(l.Seq, 10)]
		o := Outcome{Letter: l, Err: st.err, Requeued: st.requeued && st.done}
		if !st.done && o.Err == nil {
			o.Err = errors.New("not redriven: the run ended first")
		}
		out = append(out, o)
	}
	return out
}

var _ message.Publisher = requeuePublisher{}
