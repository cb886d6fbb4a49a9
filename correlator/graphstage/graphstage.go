// Package graphstage is the "graph" stage kind: a durable consumer of CALLS
// that folds calls into graph changes (package graph) and applies them in
// batches to a store — the embedded one (default) or Neo4j — and serves
// that store's graph over HTTP (package httpapi: /api/v1/graph, the named
// queries, the service map at /).
//
// A batch is applied together with the last CALLS sequence it contains and
// its messages are acked only after it committed; until then they are held
// (InProgress), however long the store is away. A message at or below the
// store's sequence is skipped, so a crash between write and ack, or a
// replay, never counts a call twice; a message redelivered while its fold
// waits for its write is held again, not acked. The consumer is made anew at
// every start, from the store's sequence on, so what a stopped stage had
// folded but not written is read again at once. Calls re-emitted by a restarted correlator share a connection
// half (or, naming none, the id) with the first emission and are dropped
// by it. Nodes and links the store was given before, unchanged, are left
// out of later batches (graph.Written), so writes scale with the edges
// whose counts change.
package graphstage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/httpapi"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Store kinds.
const (
	StoreEmbedded = "embedded"
	StoreNeo4j    = "neo4j"
)

// Config is the graph stage's `config:`.
type Config struct {
	// Store is "embedded" (default) or "neo4j".
	Store string `yaml:"store" json:"store"`
	// Neo4j configures the Neo4j store; the URI, user and password default
	// to WEFT_NEO4J_URI, WEFT_NEO4J_USER, WEFT_NEO4J_PASSWORD.
	Neo4j neo4jstore.Config `yaml:"neo4j" json:"neo4j"`
	// FlushInterval is how often folded changes are written. Default 100ms.
	FlushInterval time.Duration `yaml:"flushInterval" json:"flushInterval"`
	// MaxPendingMessages forces a write when that many CALLS messages wait
	// for one. Default 512.
	MaxPendingMessages int `yaml:"maxPendingMessages" json:"maxPendingMessages"`
	// AckWait is how long CALLS redelivers a message the stage neither
	// acked nor marked in progress; a held message is marked in progress
	// every third of it. Default 30s, and at least 10 flush intervals.
	AckWait time.Duration `yaml:"ackWait" json:"ackWait"`
	// SnapshotInterval is how often the embedded store is saved to the
	// data dir. Default 30s.
	SnapshotInterval time.Duration `yaml:"snapshotInterval" json:"snapshotInterval"`
	// Brokers are extra broker rules, tried before the built-in ones.
	Brokers []graph.BrokerRule `yaml:"brokers" json:"brokers"`
	// NoDefaultBrokers drops the built-in broker rules.
	NoDefaultBrokers bool `yaml:"noDefaultBrokers" json:"noDefaultBrokers"`
	// DedupeWindow is how many recent call ids are remembered to drop a
	// call emitted twice. Default 1048576.
	DedupeWindow int `yaml:"dedupeWindow" json:"dedupeWindow"`
	// DedupeWarmup is how much of CALLS before the store's sequence is
	// re-read at start for call ids only, so a call a restarted correlator
	// emits again is still recognised. Default 5m.
	DedupeWarmup time.Duration `yaml:"dedupeWarmup" json:"dedupeWarmup"`
	// Retention is how long the graph keeps what CALLS brought: counts,
	// pods, ends. Default the stream's max age (nothing is dropped when
	// the stream keeps everything); it may not exceed it, since the
	// graph must be what a replay of the stream rebuilds. The graph drops
	// whole buckets (RetentionBucket), never part of one, and no bucket
	// the stream no longer holds whole: see docs/lifecycle.md.
	Retention time.Duration `yaml:"retention" json:"retention"`
	// RetentionBucket is the span of CALLS stream time whose counts the
	// graph keeps apart, so it can drop them whole. Default a 24th of
	// the retention.
	RetentionBucket time.Duration `yaml:"retentionBucket" json:"retentionBucket"`
}

// NewConfig returns the config with defaults.
func NewConfig() *Config {
	return &Config{Store: StoreEmbedded, FlushInterval: 100 * time.Millisecond, MaxPendingMessages: 512, AckWait: 30 * time.Second,
		SnapshotInterval: 30 * time.Second, DedupeWindow: 1 << 20, DedupeWarmup: 5 * time.Minute}
}

// Validate reports every problem in the config as written. A Neo4j URI
// left to the environment (WEFT_NEO4J_URI, a Secret in a cluster) is not
// required here: a topology validates anywhere; New checks the URI where
// the stage runs.
func (c *Config) Validate() error {
	var errs []error
	switch c.Store {
	case StoreEmbedded:
	case StoreNeo4j:
		if c.Neo4j.URI != "" {
			if err := c.Neo4j.Validate(); err != nil {
				errs = append(errs, err)
			}
		}
	default:
		errs = append(errs, fmt.Errorf("store %q: want %q or %q", c.Store, StoreEmbedded, StoreNeo4j))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flushInterval %v: must be positive", c.FlushInterval))
	}
	if c.MaxPendingMessages <= 0 {
		errs = append(errs, fmt.Errorf("maxPendingMessages %d: must be positive", c.MaxPendingMessages))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("ackWait %v: must not be negative", c.AckWait))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %v: must not be negative", c.Retention))
	}
	if c.RetentionBucket < 0 || (c.Retention > 0 && c.RetentionBucket > c.Retention) {
		errs = append(errs, fmt.Errorf("retentionBucket %v: must be positive and at most the retention %v", c.RetentionBucket, c.Retention))
	}
	for _, r := range c.Brokers {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Kind is the graph stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "graph",
		Description: "folds calls from CALLS into a graph of pods, containers and their calls (embedded or Neo4j)",
		Deploy:      []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment, stage.DeployStatefulSet},
		Sink:        true,
		NewConfig:   func() any { return NewConfig() },
		New:         New,
	}
}

// Stage is a running graph stage.
type Stage struct {
	set   stage.Settings
	cfg   Config
	log   *slog.Logger
	input stage.Stream

	store graph.Store
	mem   *memstore.Store // the embedded store, nil for Neo4j

	// dec is the handler's decoder; the consumer calls the handler from one
	// goroutine at a time, after warmup has used it.
	dec *schema.CallDecoder

	mu   sync.Mutex
	fold *graph.Fold
	seen *graph.Seen
	// held are the deliveries of messages folded but not yet in the
	// store, by stream sequence, each acked once a batch up to its
	// sequence has committed.
	held    []heldMsg
	seq     uint64 // highest sequence folded
	applied uint64 // the store's sequence
	// first is the first sequence the consumer delivers (the store's
	// sequence + 1, or a replay's start), and str the input stream, from
	// which a sequence whose delivery was lost is read (see fillGap).
	first   uint64
	str     jetstream.Stream
	pending *graph.Batch
	// ready are batches taken whole, each of one retention bucket,
	// waiting for their write before pending.
	ready []*graph.Batch
	stats Stats
	kick  chan struct{}

	// retention and bucket are the graph's retention and bucket width
	// (0: none); appliedBucket is the bucket of the last batch written,
	// retainedFrom the store's cut.
	retention, bucket           time.Duration
	appliedBucket, retainedFrom int64

	ackWait time.Duration

	// fault is why the stage cannot do its job now (Neo4j refusing it),
	// nil when it can: what Ready says.
	faultMu sync.Mutex
	fault   error
	// retry is the wait for a Neo4j that refused the start; retryStop
	// ends it and retryDone is closed when it has.
	retryStop context.CancelFunc
	retryDone chan struct{}

	// live is the store the HTTP API reads: set once begin has opened
	// and checked it (begin runs again while Neo4j is away).
	liveMu sync.Mutex
	live   graph.Store

	cons    *consume.Consumer
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	stopped sync.Once
}

// heldMsg is a delivery waiting for its batch's commit.
type heldMsg struct {
	seq     uint64
	msg     jetstream.Msg
	touched time.Time // delivered, or last marked in progress
}

// Stats are the stage's figures.
type Stats struct {
	Calls       uint64 // calls folded
	Duplicates  uint64 // calls dropped by id
	PodsEnded   uint64 // ended pods folded
	PodsChanged uint64 // changed pods folded
	Batches     uint64 // batches written
	Rows        uint64 // row upserts written
	Skipped     uint64 // messages at or below the store's sequence
	// GapFilled counts messages read from the stream because a later one
	// came first (a delivery lost on the way: the client cut off as a
	// slow consumer, a reconnect); their deliveries come again after
	// AckWait and are acked then.
	GapFilled uint64
	// Rehold counts redeliveries of messages folded but not yet written:
	// held again, not acked.
	Rehold uint64
	// InProgress counts the in-progress marks sent for held messages.
	InProgress uint64
	// Folded is the highest CALLS sequence folded, Applied the store's.
	Folded, Applied uint64
	// RetainedFrom is the store's retention cut (Unix nanoseconds, the
	// start of the oldest bucket it keeps; 0: nothing dropped yet).
	RetainedFrom int64
}

// New builds a graph stage.
func New(s stage.Settings) (stage.Stage, error) {
	cfg := NewConfig()
	if c, ok := s.Config.(*Config); ok && c != nil {
		cfg = c
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", s.Name, err)
	}
	if cfg.Store == StoreNeo4j {
		c := *cfg
		c.Neo4j.FromEnv()
		if err := c.Neo4j.Validate(); err != nil {
			return nil, fmt.Errorf("stage %s: %w", s.Name, err)
		}
		cfg = &c
	}
	if len(s.Inputs) != 1 {
		return nil, fmt.Errorf("stage %s: a graph stage reads exactly one stream (CALLS), got %d", s.Name, len(s.Inputs))
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Counters == nil {
		s.Counters = &stage.Counters{}
	}
	brokers := graph.Brokers(append([]graph.BrokerRule(nil), cfg.Brokers...))
	if !cfg.NoDefaultBrokers {
		brokers = append(brokers, graph.DefaultBrokers...)
	}
	seen := graph.NewSeen(cfg.DedupeWindow)
	fold := graph.NewFold(brokers, seen)
	// The record of what the store holds starts empty with the stage, so
	// the first batch after a start writes every node again.
	fold.SkipWritten(graph.NewWritten(0))
	return &Stage{set: s, cfg: *cfg, log: s.Logger, input: s.Inputs[0],
		dec: schema.NewCallDecoder(), fold: fold, seen: seen,
		kick: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// Store returns the stage's store (after Start).
func (s *Stage) Store() graph.Store { return s.store }

// Stats returns the stage's figures.
func (s *Stage) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Folded, st.Applied, st.RetainedFrom = s.seq, s.applied, s.retainedFrom
	return st
}

func (s *Stage) openStore(ctx context.Context) error {
	replay := s.set.Replay != nil
	switch s.cfg.Store {
	case StoreNeo4j:
		st, err := neo4jstore.Open(ctx, s.cfg.Neo4j)
		if err != nil {
			return err
		}
		if err := st.CheckMigrations(ctx); err != nil {
			_ = st.Close(ctx)
			return err
		}
		if replay {
			if empty, err := st.Empty(ctx); err != nil || !empty {
				_ = st.Close(ctx)
				if err == nil {
					err = fmt.Errorf("replay needs an empty graph, and database %q holds one: use a fresh database (--neo4j-database)", s.cfg.Neo4j.Database)
				}
				return err
			}
		}
		s.store = st
	default:
		var err error
		s.mem = memstore.New()
		if s.set.DataDir != "" && !replay {
			if s.mem, err = memstore.Load(s.set.DataDir); err != nil {
				return err
			}
		}
		if replay && s.set.DataDir != "" {
			if _, err := os.Stat(s.set.DataDir + "/" + memstore.SnapshotFile); err == nil {
				return fmt.Errorf("replay needs an empty graph, and %s holds one: use a fresh data dir", s.set.DataDir)
			}
		}
		s.store = s.mem
	}
	return nil
}

// Start opens the store, checks it, and starts consuming. When Neo4j
// cannot be used as configured (nothing answers, the credentials or the
// database are refused, migrations are pending: neo4jstore.IsUnavailable),
// Start returns at once and the stage waits for Neo4j in the background,
// not ready (Ready says why) and consuming nothing, so CALLS keeps every
// message; it starts consuming once Neo4j lets it, and reports any other
// failure then as fatal to the host. Other failures (a replay into a graph
// that is not empty), and every failure of a replay, which a person is
// waiting for, fail Start.
func (s *Stage) Start(ctx context.Context, host stage.Host) error {
	// Either store: the page and the API read whichever is open.
	if err := serve(host, httpapi.New(liveStore{s})); err != nil {
		s.log.Warn("another graph stage serves the graph in this process; this one's is not served", "err", err)
	}
	err := s.begin(ctx, host)
	if err == nil {
		return nil
	}
	if s.cfg.Store != StoreNeo4j || s.set.Replay != nil || !neo4jstore.IsUnavailable(err) {
		return fmt.Errorf("stage %s: %w", s.set.Name, err)
	}
	s.setFault(err)
	s.log.Warn("neo4j not usable yet, holding CALLS until it is", "err", err)
	rctx, stop := context.WithCancel(context.Background())
	s.retryStop, s.retryDone = stop, make(chan struct{})
	go s.retry(rctx, host)
	return nil
}

// retry tries begin again, every second at first and then at most every
// 15 s, until it succeeds, fails for another reason than Neo4j being
// unavailable (reported to host as fatal), or ctx ends.
func (s *Stage) retry(ctx context.Context, host stage.Host) {
	defer close(s.retryDone)
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
		err := s.begin(ctx, host)
		switch {
		case err == nil:
			s.setFault(nil)
			s.log.Info("neo4j answers, consuming CALLS", "uri", s.cfg.Neo4j.URI)
			return
		case ctx.Err() != nil:
			return
		case neo4jstore.IsUnavailable(err):
			s.setFault(err)
			s.log.Debug("neo4j still unavailable", "err", err)
		default:
			err = fmt.Errorf("stage %s: %w", s.set.Name, err)
			s.setFault(err)
			host.Fatal(err)
			return
		}
	}
}

// setFault records why the stage cannot do its job, nil when it can.
func (s *Stage) setFault(err error) {
	s.faultMu.Lock()
	s.fault = err
	s.faultMu.Unlock()
}

// Ready implements stage.Readier: not ready while Neo4j refuses the stage
// (at start, or the last write failed), with the reason.
func (s *Stage) Ready() error {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.fault
}

// begin opens the store, checks it, and starts consuming; on failure it
// leaves nothing open.
func (s *Stage) begin(ctx context.Context, host stage.Host) error {
	if err := s.openStore(ctx); err != nil {
		return err
	}
	last, err := s.store.LastSeq(ctx)
	if err != nil {
		_ = s.store.Close(ctx)
		return err
	}
	js := host.JetStream()
	str, err := js.Stream(ctx, s.input.Name)
	if err != nil {
		_ = s.store.Close(ctx)
		return fmt.Errorf("stream %s: %w", s.input.Name, err)
	}
	if err := s.setRetention(ctx, str); err != nil {
		_ = s.store.Close(ctx)
		return err
	}
	s.mu.Lock()
	s.applied, s.seq, s.str = last, last, str
	s.first = last + 1
	if r := s.set.Replay; r != nil && r.StartSeq > s.first {
		s.first = r.StartSeq
	}
	s.mu.Unlock()
	if last > 0 && s.cfg.DedupeWarmup > 0 {
		if err := s.warmup(ctx, js, last); err != nil {
			s.log.Warn("dedupe warm-up incomplete", "err", err)
		}
	}
	cc := consume.ConfigFor(s.set, s.input)
	if s.cfg.AckWait == 0 {
		s.cfg.AckWait = 30 * time.Second
	}
	cc.AckWait = max(s.cfg.AckWait, 10*s.cfg.FlushInterval)
	s.ackWait = cc.AckWait
	cc.MaxAckPending = 4 * s.cfg.MaxPendingMessages
	// CALLS messages run up to the publisher's 256 KiB: 64 of them are
	// 16 MiB on their way, well under the 64 MiB past which the server
	// cuts a client off as a slow consumer.
	cc.PullBatch = 64
	if s.set.Replay == nil {
		// The graph is the store's plus the stream's tail from the store's
		// sequence on, read afresh at every start: for the embedded store
		// its snapshot, for Neo4j what it committed. A consumer kept from
		// the last run would hold back, until its AckWait, what that run
		// had folded but not written.
		cc.Durable = s.set.Name + "-" + s.input.Name + "-" + s.cfg.Store
		cc.Replay = &stage.Replay{Durable: cc.Durable, StartSeq: last + 1}
		if err := js.DeleteConsumer(ctx, s.input.Name, cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			_ = s.store.Close(ctx)
			return fmt.Errorf("reset consumer %s: %w", cc.Durable, err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cons, err := consume.Start(ctx, js, cc, s.handle, s.set.Counters, s.log)
	if err != nil {
		_ = s.store.Close(ctx)
		return err
	}
	s.cons = cons
	s.liveMu.Lock()
	s.live = s.store
	s.liveMu.Unlock()
	go s.loop()
	go s.keepalive()
	return nil
}

// setRetention settles the retention (from the config and the stream's
// max age) and reads the store's cut.
func (s *Stage) setRetention(ctx context.Context, str jetstream.Stream) error {
	maxAge := str.CachedInfo().Config.MaxAge
	ret := s.cfg.Retention
	switch {
	case ret == 0:
		ret = maxAge
	case maxAge > 0 && ret > maxAge:
		return fmt.Errorf("retention %v exceeds stream %s's max age %v: the graph would keep what a replay cannot rebuild; set at most %v", ret, s.input.Name, maxAge, maxAge)
	}
	bucket := s.cfg.RetentionBucket
	if bucket == 0 {
		bucket = ret / 24
	}
	if ret == 0 {
		bucket = 0
	} else if bucket <= 0 || bucket > ret {
		return fmt.Errorf("retentionBucket %v: must be positive and at most the retention %v", bucket, ret)
	}
	var from int64
	if r, ok := s.store.(graph.Retainer); ok && bucket > 0 {
		var err error
		if from, err = r.RetainedFrom(ctx); err != nil {
			return err
		}
	} else if bucket > 0 {
		s.log.Warn("this store keeps no retention buckets: the graph keeps everything", "store", s.cfg.Store, "retention", ret)
		ret, bucket = 0, 0
	}
	s.mu.Lock()
	s.retention, s.bucket, s.retainedFrom = ret, bucket, from
	s.mu.Unlock()
	return nil
}

// bucketOf is the retention bucket of a message stored at t.
func (s *Stage) bucketOf(t time.Time) int64 {
	if s.bucket <= 0 {
		return 0
	}
	n := t.UnixNano()
	return n - n%int64(s.bucket)
}

// enter makes bk the bucket of what is folded next, taking what is folded
// of another bucket as a batch of its own; s.mu is held.
func (s *Stage) enter(bk int64) {
	if bk == s.fold.Bucket() {
		return
	}
	if !s.fold.Empty() {
		s.ready = append(s.ready, s.fold.Take(s.seq))
	}
	s.fold.SetBucket(bk)
}

// retain drops from the store the buckets the graph no longer keeps: those
// before now less the retention, and those the stream no longer holds
// whole (its first message is later than their start), but never the
// bucket of the last batch written or a later one: what is folded and
// not written yet, and every message still to come, is of that bucket or
// a later one (stream time grows with the sequence), so no batch of a
// dropped bucket is written after the cut. It runs between writes.
func (s *Stage) retain(ctx context.Context) error {
	s.mu.Lock()
	last, from, w := s.appliedBucket, s.retainedFrom, int64(s.bucket)
	s.mu.Unlock()
	r, ok := s.store.(graph.Retainer)
	if w <= 0 || !ok || last == 0 {
		return nil
	}
	info, err := s.str.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.input.Name, err)
	}
	keep := time.Now().Add(-s.retention).UnixNano()
	if info.State.Msgs > 0 && info.State.FirstSeq > 1 {
		// The stream lost messages before its first: the first's bucket
		// may have lost some, and is not kept (a bucket's start is never
		// a message's time but by chance).
		keep = max(keep, info.State.FirstTime.UnixNano())
	}
	cut := min((keep+w-1)/w*w, last) // the first whole bucket kept
	if cut <= from {
		return nil
	}
	if err := r.Retain(ctx, cut); err != nil {
		return err
	}
	s.mu.Lock()
	s.retainedFrom = cut
	s.mu.Unlock()
	return nil
}

// warmup records the ids of the calls in the DedupeWarmup before sequence
// last, without folding them: they are in the store already.
func (s *Stage) warmup(ctx context.Context, js jetstream.JetStream, last uint64) error {
	str, err := js.Stream(ctx, s.input.Name)
	if err != nil {
		return err
	}
	m, err := str.GetMsg(ctx, last)
	if err != nil {
		return fmt.Errorf("message %d: %w", last, err)
	}
	from := m.Time.Add(-s.cfg.DedupeWarmup)
	oc, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from})
	if err != nil {
		return err
	}
	for {
		batch, err := oc.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			if meta.Sequence.Stream > last {
				return nil
			}
			b, err := s.dec.Decode(msg.Data())
			if err != nil {
				continue
			}
			for _, c := range b.GetCalls() {
				s.seen.AddCall(c)
			}
			if meta.Sequence.Stream == last {
				return nil
			}
		}
		if n == 0 {
			return batch.Error()
		}
	}
}

// serve mounts api on host. A mux takes a pattern once (it panics on the
// second), so when two graph stages share a process (an embedded store
// and a Neo4j one, say) the first started serves its graph and serve
// returns why this one cannot.
func serve(host stage.Host, api *httpapi.API) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mount the graph's HTTP API: %v", r)
		}
	}()
	api.Register(host)
	return nil
}

// liveStore is the graph.Reader the HTTP API reads: the stage's store once
// it is open, whichever it is.
type liveStore struct{ s *Stage }

// errNotOpen is the API's answer before the store is open (Neo4j away).
var errNotOpen = errors.New("the graph store is not open yet")

func (l liveStore) store() (graph.Store, error) {
	l.s.liveMu.Lock()
	st := l.s.live
	l.s.liveMu.Unlock()
	if st == nil {
		if err := l.s.Ready(); err != nil {
			return nil, fmt.Errorf("%w: %w", errNotOpen, err)
		}
		return nil, errNotOpen
	}
	return st, nil
}

// Graph implements graph.Reader.
func (l liveStore) Graph(ctx context.Context) (*graph.Graph, error) {
	st, err := l.store()
	if err != nil {
		return nil, err
	}
	r, ok := st.(graph.Reader)
	if !ok {
		return nil, fmt.Errorf("store %T cannot read its graph", st)
	}
	return r.Graph(ctx)
}

// Answer implements httpapi.Answerer: Neo4j runs a query's Cypher, the
// embedded store answers it over its graph.
func (l liveStore) Answer(ctx context.Context, q *query.Query, arg any) (*query.Result, error) {
	st, err := l.store()
	if err != nil {
		return nil, err
	}
	if a, ok := st.(httpapi.Answerer); ok {
		return a.Answer(ctx, q, arg)
	}
	g, err := l.Graph(ctx)
	if err != nil {
		return nil, err
	}
	return q.Embedded(g, arg), nil
}

func (s *Stage) handle(ctx context.Context, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return consume.Permanent(err)
	}
	seq := meta.Sequence.Stream
	b, err := s.dec.Decode(m.Data())
	if err != nil {
		return consume.Permanent(err)
	}
	s.mu.Lock()
	if seq <= s.applied {
		s.stats.Skipped++
		s.mu.Unlock()
		return nil // in the store: ack
	}
	if seq <= s.seq {
		// Folded, waiting for its write (redelivered because the store
		// was away for longer than AckWait, or a mark was lost): hold
		// this delivery too, acked with the first at the commit.
		s.stats.Rehold++
		s.held = append(s.held, heldMsg{seq: seq, msg: m, touched: time.Now()})
		s.mu.Unlock()
		return consume.ErrAckLater
	}
	if next := max(s.seq+1, s.first); seq > next {
		s.mu.Unlock()
		missed, err := s.fillGap(ctx, next, seq-1)
		if err != nil {
			// Not folded, not acked: comes again after the backoff.
			return fmt.Errorf("CALLS sequence %d came before %d: %w", seq, next, err)
		}
		s.mu.Lock()
		for _, mb := range missed {
			s.enter(s.bucketOf(mb.at))
			s.add(mb.b)
			s.seq = mb.seq
			s.stats.GapFilled++
		}
	}
	s.enter(s.bucketOf(meta.Timestamp))
	s.add(b)
	s.seq = seq
	s.held = append(s.held, heldMsg{seq: seq, msg: m, touched: time.Now()})
	full := len(s.held) >= s.cfg.MaxPendingMessages
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return consume.ErrAckLater
}

// add folds the calls, the ended and the changed pods of b; s.mu is held.
func (s *Stage) add(b *schema.CallBatch) {
	for _, c := range b.GetCalls() {
		if s.fold.Add(c) {
			s.stats.Calls++
		} else {
			s.stats.Duplicates++
		}
	}
	for _, e := range b.GetPodsEnded() {
		s.fold.AddEnded(e)
		s.stats.PodsEnded++
	}
	for _, e := range b.GetPodsChanged() {
		s.fold.AddChanged(e)
		s.stats.PodsChanged++
	}
}

// filled is a message fillGap read: its calls, sequence and store time.
type filled struct {
	b   *schema.CallBatch
	seq uint64
	at  time.Time
}

// fillGap reads the messages from..to of the input stream, which were
// not delivered before a later one: folding by sequence needs every
// message below the highest folded, since the store records only that
// sequence. JetStream delivers in order, except when a delivery is lost
// on its way (the client cut off as a slow consumer, a reconnect); the
// server then sends it again after AckWait, after the later ones. A
// sequence the stream no longer holds (aged out, deleted) is no gap. The
// redelivery, when it comes, is held and acked as any message folded.
func (s *Stage) fillGap(ctx context.Context, from, to uint64) ([]filled, error) {
	info, err := s.str.Info(ctx)
	if err != nil {
		return nil, err
	}
	from = max(from, info.State.FirstSeq)
	var out []filled
	for seq := from; seq <= to; seq++ {
		raw, err := s.str.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read sequence %d: %w", seq, err)
		}
		b, err := schema.NewCallDecoder().Decode(raw.Data)
		if err != nil {
			// Its own delivery dead-letters it; nothing to fold.
			continue
		}
		out = append(out, filled{b: b, seq: seq, at: raw.Time})
	}
	if len(out) > 0 {
		s.log.Warn("deliveries lost on the way, read from the stream instead", "stream", s.input.Name, "from", from, "to", to, "messages", len(out))
	}
	return out, nil
}

func (s *Stage) loop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	var retain <-chan time.Time
	if s.bucket > 0 {
		rt := time.NewTicker(max(min(s.bucket/4, 30*time.Second), s.cfg.FlushInterval))
		defer rt.Stop()
		retain = rt.C
	}
	var snap <-chan time.Time
	if s.mem != nil && s.set.DataDir != "" {
		st := time.NewTicker(s.cfg.SnapshotInterval)
		defer st.Stop()
		snap = st.C
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-snap:
			if err := s.mem.Save(s.set.DataDir); err != nil {
				s.log.Warn("save graph", "err", err)
			}
			continue
		case <-retain:
			if err := s.retain(s.ctx); err != nil {
				s.log.Warn("drop what the graph no longer keeps, will retry", "err", err)
			}
			continue
		}
		if err := s.flush(s.ctx); err != nil {
			s.set.Counters.Errors.Add(1)
			s.setFault(err)
			s.log.Warn("write graph batch, will retry", "err", err)
		} else {
			s.setFault(nil)
		}
	}
}

// flush writes what is folded and acks its messages. A failed write is
// kept and retried whole (the store skips it if it did land) before
// anything folded since is taken.
func (s *Stage) flush(ctx context.Context) error {
	s.mu.Lock()
	if s.pending == nil {
		switch {
		case len(s.ready) > 0:
			s.pending = s.ready[0]
			s.ready = s.ready[1:]
		case s.fold.Empty() && len(s.held) == 0:
			s.mu.Unlock()
			return nil
		default:
			s.pending = s.fold.Take(s.seq)
		}
	}
	b := s.pending
	s.mu.Unlock()
	if err := s.store.Apply(ctx, b); err != nil {
		return err
	}
	s.wrote(b)
	return nil
}

// wrote records that the pending batch b is in the store and acks every
// delivery up to its sequence.
func (s *Stage) wrote(b *graph.Batch) {
	s.mu.Lock()
	s.pending = nil
	s.applied = max(s.applied, b.Seq)
	s.appliedBucket = max(s.appliedBucket, b.Bucket)
	s.stats.Batches++
	s.stats.Rows += uint64(b.Rows())
	var acks []jetstream.Msg
	keep := s.held[:0]
	for _, h := range s.held {
		if h.seq <= s.applied {
			acks = append(acks, h.msg)
		} else {
			keep = append(keep, h)
		}
	}
	clear(s.held[len(keep):])
	s.held = keep
	s.mu.Unlock()
	for _, m := range acks {
		if err := m.Ack(); err == nil {
			s.set.Counters.Acked.Add(1)
		}
	}
}

// keepalive marks held messages in progress every third of AckWait, so
// the server does not redeliver them while their batch waits for the
// store. It runs apart from the writes, which may block while the store
// is away.
func (s *Stage) keepalive() {
	every := s.ackWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var due []jetstream.Msg
		s.mu.Lock()
		for i := range s.held {
			if now.Sub(s.held[i].touched) >= every {
				due = append(due, s.held[i].msg)
				s.held[i].touched = now
			}
		}
		s.mu.Unlock()
		n := uint64(0)
		for _, m := range due {
			if err := m.InProgress(); err == nil {
				n++
			}
		}
		s.mu.Lock()
		s.stats.InProgress += n
		s.mu.Unlock()
	}
}

// Shutdown stops reading, writes and acks what is folded, saves the
// embedded graph and closes the store.
func (s *Stage) Shutdown(ctx context.Context) error {
	var errs []error
	s.stopped.Do(func() {
		if s.retryStop != nil {
			s.retryStop()
			<-s.retryDone
		}
		if s.cons == nil {
			return
		}
		if err := s.cons.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		s.cancel()
		<-s.done
		s.mu.Lock()
		n := len(s.ready) + 2 // a retried pending batch, those ready, then the rest
		s.mu.Unlock()
		for range n {
			if err := s.flush(ctx); err != nil {
				errs = append(errs, err)
				break
			}
		}
		if s.mem != nil && s.set.DataDir != "" {
			if err := s.mem.Save(s.set.DataDir); err != nil {
				errs = append(errs, err)
			}
		}
		if err := s.store.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

var _ stage.Stage = (*Stage)(nil)
