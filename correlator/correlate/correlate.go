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
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/group"
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
	// MaxAckPending bounds EVENTS messages in flight, per partition.
	// Default 8192.
	MaxAckPending int `yaml:"maxAckPending" json:"maxAckPending"`
	// Lease is how long a replica keeps its partitions without renewing
	// its membership; a replica that dies (or is paused) loses them after
	// it. It must leave room in AckWait for a held message:
	// lease+window+closeWait+flushInterval < ackWait. Default 3s, or
	// less when ackWait leaves less room (half of it).
	Lease time.Duration `yaml:"lease" json:"lease"`
}

// NewConfig returns the config with defaults.
func NewConfig() *Config {
	return &Config{Window: time.Second, CloseWait: 5 * time.Second, MaxConnections: 1 << 20,
		FlushInterval: 100 * time.Millisecond, AckWait: 15 * time.Second, MaxAckPending: 8192,
	}
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
	if room := c.AckWait - c.Window - c.CloseWait - c.FlushInterval; c.Lease == 0 && room > 0 {
		c.Lease = min(3*time.Second, room/2)
	}
	if c.Lease < 0 {
		errs = append(errs, fmt.Errorf("lease %v: must be positive", c.Lease))
	} else if c.Lease > 0 && c.Lease+c.Window+c.CloseWait+c.FlushInterval >= c.AckWait {
		errs = append(errs, fmt.Errorf("lease %v: lease+window+closeWait+flushInterval must be under ackWait %v, so a replica whose lease ran out has stopped before its held messages go to another", c.Lease, c.AckWait))
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

// Stage is a running correlator: the partitions of EVENTS this replica
// owns, each with its own joiner, consumer and publisher (part).
type Stage struct {
	set   stage.Settings
	cfg   Config
	log   *slog.Logger
	input stage.Stream
	n     int // partitions
	js    jetstream.JetStream
	host  stage.Host
	grp   atomic.Pointer[group.Group]

	// noRebuild starts partitions without the pod index rebuild: the
	// baseline of BenchmarkPartitionStart, never set otherwise.
	noRebuild bool

	mu      sync.Mutex // guards parts, past; held while partitions move
	parts   map[int]*part
	past    join.Stats // of parts stopped
	stopped sync.Once
	closed  bool
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
	return &Stage{set: s, cfg: *cfg, log: log, input: s.Inputs[0], n: max(s.Inputs[0].Partitions, 1), parts: map[int]*part{}}, nil
}

// Stats sums the joiners' counters over the partitions this replica
// holds and has held (for /metrics and tests).
func (s *Stage) Stats() join.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.past
	for _, p := range s.parts {
		st = st.Add(p.stats())
	}
	return st
}

// Owned is the partitions this replica reads now, sorted.
func (s *Stage) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.parts))
	for k := range s.parts {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Member is this replica's name in its group ("" before Start or in a
// replay, which reads every partition itself).
func (s *Stage) Member() string {
	if g := s.grp.Load(); g != nil {
		return g.Name()
	}
	return ""
}

// Start joins the stage's group; the group assigns the partitions this
// replica reads (all of them under `weft replay`, which runs alone).
func (s *Stage) Start(ctx context.Context, host stage.Host) error {
	s.js, s.host = host.JetStream(), host
	if s.set.Replay != nil {
		all := make([]int, s.n)
		for i := range all {
			all[i] = i
		}
		return s.assign(ctx, all)
	}
	g, err := group.Join(ctx, s.js, group.Config{
		Stage: s.set.Name, Partitions: s.n, Member: memberName(), Lease: s.cfg.Lease,
		OnChange: func(ctx context.Context, owned []int) {
			if err := s.assign(ctx, owned); err != nil {
				host.Fatal(err)
			}
		},
	}, s.log)
	if err != nil {
		return err
	}
	s.grp.Store(g)
	return nil
}

// valid is the fence of every part's publisher: the replica holds its
// lease (always true in a replay).
func (s *Stage) valid() bool {
	g := s.grp.Load()
	return g == nil || g.Valid()
}

// assign stops the parts no longer owned (publishing and acking what is
// complete while the lease holds, handing the rest back) and starts the
// newly owned ones.
func (s *Stage) assign(ctx context.Context, owned []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	for k, p := range s.parts {
		if !slices.Contains(owned, k) {
			if err := p.stop(ctx); err != nil {
				s.log.Warn("release partition", "partition", k, "err", err)
			}
			st := p.stats()
			st.Held = 0
			s.past = s.past.Add(st)
			delete(s.parts, k)
		}
	}
	var fresh []*part
	for _, k := range owned {
		if s.parts[k] == nil {
			fresh = append(fresh, s.newPart(k))
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	// Every newly owned partition gets the pod history before its
	// consumer delivers a connection event: one read for all of them.
	var r rebuild
	if !s.noRebuild {
		var err error
		if r, err = s.rebuildPods(ctx, fresh); err != nil {
			return err
		}
	}
	ks := make([]int, len(fresh))
	for i, p := range fresh {
		if err := p.start(ctx, r.seq); err != nil {
			return err
		}
		s.parts[p.k] = p
		ks[i] = p.k
	}
	s.log.Info("partitions started", "partitions", ks, "pod_events_rebuilt", r.events, "pod_messages", r.msgs, "rebuilt_to_seq", r.seq, "rebuild_took", r.took)
	return nil
}

// consumerConfig is partition k's durable consumer: one per partition,
// reading the partition's connection events and every node's pod events
// (each partition resolves endpoints to pods on its own).
func (s *Stage) consumerConfig(k int) consume.Config {
	cc := consume.ConfigFor(s.set, s.input)
	cc.FilterSubjects = consume.EventFilters(s.set, schema.KindTCP, schema.KindUnix, schema.KindPod)
	if s.n > 1 {
		cc.FilterSubjects = consume.PartitionFilters(s.set, k, s.n, schema.KindTCP, schema.KindUnix, schema.KindPod)
		if cc.Durable == "" {
			cc.Durable = consume.DurableName(s.set.Name, s.input.Name)
		}
		cc.Durable += "-p" + strconv.Itoa(k)
	}
	cc.AckWait = s.cfg.AckWait
	cc.MaxAckPending = s.cfg.MaxAckPending
	cc.PullBatch = 256
	if s.set.Replay == nil {
		cc.PinnedTTL = s.pinnedTTL()
	}
	return cc
}

// pinnedTTL is the partition consumers' pin TTL. The pin only keeps two
// replicas that disagree for a moment from both reading; the lease
// decides ownership. Idle pulls come every second, so the pin lasts a few.
func (s *Stage) pinnedTTL() time.Duration {
	if s.set.Replay != nil {
		return 0
	}
	return max(s.cfg.Lease, 3*time.Second)
}

func memberName() string {
	h, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", h, os.Getpid(), b)
}

// Shutdown stops every partition: what is complete is published and
// acked, what is held goes back to the server for the next owner, and the
// replica leaves its group so the others take its partitions at once.
func (s *Stage) Shutdown(ctx context.Context) error {
	var errs []error
	s.stopped.Do(func() {
		s.mu.Lock()
		s.closed = true
		parts := s.parts
		s.parts = map[int]*part{}
		s.mu.Unlock()
		g := s.grp.Load()
		if g != nil {
			// No more assignments; the lease still holds while parts stop.
			g.Stop()
		}
		for _, p := range parts {
			if err := p.stop(ctx); err != nil {
				errs = append(errs, err)
			}
			st := p.stats()
			st.Held = 0
			s.mu.Lock()
			s.past = s.past.Add(st)
			s.mu.Unlock()
		}
		if g != nil {
			if err := g.Leave(ctx); err != nil {
				errs = append(errs, err)
			}
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

// Degraded says when this replica owns no partition because the live
// replicas outnumber the stream's partitions (stage.Degrader: /readyz
// lists it and weft_stage_degraded{what="partitions"} is 1, while the
// process stays ready, so a rollout is not held up by a spare).
func (s *Stage) Degraded() []string {
	g := s.grp.Load()
	if g == nil {
		return nil
	}
	if idle, members := g.Idle(); idle {
		return []string{fmt.Sprintf("partitions: owns none of the %d of %s (%d replicas live): stands by until another replica leaves", s.n, s.input.Name, members)}
	}
	return nil
}

var (
	_ stage.Stage       = (*Stage)(nil)
	_ stage.GapReporter = (*Stage)(nil)
	_ stage.Degrader    = (*Stage)(nil)
)
