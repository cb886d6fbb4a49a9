// Package correlate is the "correlator" stage kind: a durable consumer of
// EVENTS that joins connection events into calls (package join) and
// publishes one Call per connection to CALLS.
//
// Exactly once, as far as a stream allows: an EVENTS message is acked only
// when every close it carried has become a call (and every connect/accept
// or progress of a connection reported open is in its call) and those
// calls are acked by the server (publisher Flush). A message whose closes are still waiting
// for their partner stays unacked, so after a crash it is redelivered and
// the state it fed is rebuilt. A call emitted but not acked upstream before
// a crash is emitted again with the same id; the graph stage drops it.
//
// It imports streams/ and correlator/join; it must not import the graph.
package correlate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Config is the correlator's `config:`.
type Config struct {
	// Window is how far apart the two sides of a connection may start and
	// how long a lone half waits for a partner. Default 1s.
	Window time.Duration `yaml:"window" json:"window"`
	// CloseWait is how long a closed side waits for its known partner's
	// close. Default 5s.
	CloseWait time.Duration `yaml:"closeWait" json:"closeWait"`
	// MaxConnections bounds the connection sides held. Default 1048576.
	MaxConnections int `yaml:"maxConnections" json:"maxConnections"`
	// FlushInterval is how often calls are flushed and messages acked.
	// Default 100ms.
	FlushInterval time.Duration `yaml:"flushInterval" json:"flushInterval"`
	// AckWait is the consumer's ack wait; it must exceed Window+CloseWait
	// plus FlushInterval. After a restart, lone halves wait at least this
	// long, so messages a previous instance held come back first. Default 15s.
	AckWait time.Duration `yaml:"ackWait" json:"ackWait"`
	// MaxAckPending bounds EVENTS messages in flight. Default 8192.
	MaxAckPending int `yaml:"maxAckPending" json:"maxAckPending"`
}

// NewConfig returns the config with defaults.
func NewConfig() *Config {
	return &Config{Window: time.Second, CloseWait: 5 * time.Second, MaxConnections: 1 << 20,
		FlushInterval: 100 * time.Millisecond, AckWait: 15 * time.Second, MaxAckPending: 8192}
}

// Validate reports every problem.
func (c *Config) Validate() error {
	var errs []error
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("window %v: must be positive", c.Window))
	}
	if c.CloseWait <= 0 {
		errs = append(errs, fmt.Errorf("closeWait %v: must be positive", c.CloseWait))
	}
	if c.MaxConnections <= 0 {
		errs = append(errs, fmt.Errorf("maxConnections %d: must be positive", c.MaxConnections))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flushInterval %v: must be positive", c.FlushInterval))
	}
	if c.AckWait <= c.Window+c.CloseWait+c.FlushInterval {
		errs = append(errs, fmt.Errorf("ackWait %v: must exceed window+closeWait+flushInterval (%v)", c.AckWait, c.Window+c.CloseWait+c.FlushInterval))
	}
	if c.MaxAckPending <= 0 {
		errs = append(errs, fmt.Errorf("maxAckPending %d: must be positive", c.MaxAckPending))
	}
	return errors.Join(errs...)
}

// Kind is the correlator stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "correlator",
		Description: "joins connection events from EVENTS into calls between pods, published to CALLS",
		Deploy:      []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment, stage.DeployStatefulSet},
		NewConfig:   func() any { return NewConfig() },
		New:         New,
	}
}

// Stage is a running correlator.
type Stage struct {
	set     stage.Settings
	cfg     Config
	log     *slog.Logger
	input   stage.Stream
	started time.Time

	mu      sync.Mutex
	j       *join.Joiner
	held    []*held
	lastIn  time.Time // wall time of the last event
	markIn  uint64    // watermark at lastIn
	broken  error     // an emit failed: nothing more may be acked
	pub     *publish.Publisher
	cons    *consume.Consumer
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	stopped sync.Once
}

type held struct {
	msg  jetstream.Msg
	hold join.Hold
}

// New builds a correlator from its settings.
func New(s stage.Settings) (stage.Stage, error) {
	cfg := NewConfig()
	if c, ok := s.Config.(*Config); ok && c != nil {
		cfg = c
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", s.Name, err)
	}
	if len(s.Inputs) != 1 {
		return nil, fmt.Errorf("stage %s: a correlator reads exactly one stream (EVENTS), got %d", s.Name, len(s.Inputs))
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if s.Counters == nil {
		s.Counters = &stage.Counters{}
	}
	st := &Stage{set: s, cfg: *cfg, log: log, input: s.Inputs[0], done: make(chan struct{})}
	st.j = join.New(join.Config{Window: cfg.Window, CloseWait: cfg.CloseWait, MaxConnections: cfg.MaxConnections, Emit: st.emit})
	return st, nil
}

// Joiner exposes the joiner's counters (for /metrics and tests).
func (s *Stage) Stats() join.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.j.Stats()
}

// Start creates the publisher and the consumer and returns.
func (s *Stage) Start(ctx context.Context, host stage.Host) error {
	js := host.JetStream()
	pub, err := publish.New(js.Conn(), publish.Config{Stage: s.set.Name, Node: s.set.Node, Type: &schema.CallBatch{},
		// What a call repeats of itself or of an earlier call of its
		// message stays off the stream; every reader's decoder puts it back.
		PerBatch: schema.NewCallCompactor}, s.set.Counters, s.log)
	if err != nil {
		return fmt.Errorf("stage %s: %w", s.set.Name, err)
	}
	s.pub = pub
	s.started = time.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cc := consume.ConfigFor(s.set, s.input)
	cc.FilterSubjects = consume.EventFilters(s.set, schema.KindTCP, schema.KindUnix, schema.KindPod)
	cc.AckWait = s.cfg.AckWait
	cc.MaxAckPending = s.cfg.MaxAckPending
	cc.PullBatch = 256
	cons, err := consume.Start(ctx, js, cc, s.handle, s.set.Counters, s.log)
	if err != nil {
		_ = pub.Close(ctx)
		return err
	}
	s.cons = cons
	go s.loop()
	return nil
}

func (s *Stage) emit(c *schema.Call) error {
	node := c.GetClient().GetNode()
	if node == "" {
		node = c.GetServer().GetNode()
	}
	return s.pub.Publish(s.ctx, schema.CallSubject(node), c)
}

func (s *Stage) handle(ctx context.Context, m jetstream.Msg) error {
	b, err := schema.DecodeEventBatch(m.Data())
	if err != nil {
		return consume.Permanent(err)
	}
	h := &held{msg: m}
	var bad []error
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	node := b.GetOrigin().GetNode()
	if node == "" {
		s.mu.Unlock()
		return consume.Permanent(errors.New("event batch without origin node"))
	}
	for i, ev := range b.GetEvents() {
		if err := s.j.Feed(node, ev, &h.hold); err != nil {
			if errors.Is(err, join.ErrMalformed) {
				bad = append(bad, fmt.Errorf("event %d: %w", i, err))
				continue
			}
			s.broken = err
			break
		}
	}
	s.lastIn, s.markIn = time.Now(), s.j.Watermark()
	s.held = append(s.held, h)
	s.mu.Unlock()
	if len(bad) > 0 {
		// The good events went on; a copy of the message goes to the DLQ
		// with the reason, the original is acked with the rest.
		reason := fmt.Sprintf("%d of %d events malformed: %v", len(bad), len(b.GetEvents()), errors.Join(bad...))
		if err := s.cons.DeadLetters().Send(ctx, m, reason); err != nil {
			s.log.Warn("dead-letter malformed events", "err", err)
		}
	}
	return consume.ErrAckLater
}

func (s *Stage) loop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.flush(s.ctx, true)
		}
	}
}

// flush advances time (when expire is set), publishes what is emitted and
// acks every message whose closes all became calls.
func (s *Stage) flush(ctx context.Context, expire bool) {
	s.mu.Lock()
	if expire && s.broken == nil {
		// After a restart, messages a previous instance held come back
		// within AckWait: until then no lone half may give up its partner.
		if time.Since(s.started) > s.cfg.AckWait {
			now := s.j.Watermark()
			if idle := time.Since(s.lastIn); !s.lastIn.IsZero() && idle > s.cfg.Window {
				// No input: let event time follow wall time.
				now = max(now, s.markIn+uint64(idle))
			}
			if err := s.j.Advance(now); err != nil {
				s.broken = err
			}
		}
	}
	var ready []*held
	keep := s.held[:0]
	for _, h := range s.held {
		if h.hold.Pending() == 0 {
			ready = append(ready, h)
		} else {
			keep = append(keep, h)
		}
	}
	clear(s.held[len(keep):])
	s.held = keep
	broken := s.broken
	s.mu.Unlock()
	if len(ready) == 0 {
		return
	}
	if broken != nil {
		return // never ack past a lost call; redelivery rebuilds it
	}
	if err := s.pub.Flush(ctx); err != nil {
		s.log.Warn("flush calls", "err", err)
		s.mu.Lock()
		s.held = append(ready, s.held...)
		s.mu.Unlock()
		return
	}
	for _, h := range ready {
		if err := h.msg.Ack(); err == nil {
			s.set.Counters.Acked.Add(1)
		}
	}
}

// Shutdown stops reading, publishes and acks what is complete, and hands
// the messages still held back to the server for the next instance.
func (s *Stage) Shutdown(ctx context.Context) error {
	var errs []error
	s.stopped.Do(func() {
		if s.cons == nil {
			return
		}
		if err := s.cons.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		s.cancel()
		<-s.done
		s.flush(ctx, false)
		s.mu.Lock()
		for _, h := range s.held {
			_ = h.msg.Nak()
		}
		s.held = nil
		s.mu.Unlock()
		if err := s.pub.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// Gaps are what the joiner could not keep whole, by reason (exported as
// weft_stage_gaps_total): open connection sides evicted by the
// maxConnections bound (their call resumes from their next events) and
// closed sides emitted early by it.
func (s *Stage) Gaps() map[string]uint64 {
	st := s.Stats()
	return map[string]uint64{"evicted_open_side": st.EvictedOpen, "evicted_closed_side": st.EvictedEmit}
}

var (
	_ stage.Stage       = (*Stage)(nil)
	_ stage.GapReporter = (*Stage)(nil)
)
