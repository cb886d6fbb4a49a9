// Package collector is the `collector` stage kind: it loads weft's eBPF
// programs (collectors/bpf) on this node, reads their ring buffer, and
// publishes each record, decoded and attributed to its process, container
// and pod, to weft.events.<node>.<kind> on the EVENTS stream. Pods are
// announced as PodEvents (kind "pod") when first seen and when they change
// or go.
//
// Without the privileges eBPF needs the stage logs what is missing and
// stays idle, unless its config says `required: true`.
package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/collectors/cgroup"
	"github.com/weftobs/weft/collectors/decode"
	"github.com/weftobs/weft/collectors/enrich"
	"github.com/weftobs/weft/collectors/metadata"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Kind returns the collector stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "collector",
		Description: "eBPF collector: process, TCP and unix-socket events of this node, attributed to pods",
		Deploy:      []stage.DeployMode{stage.DeployDaemonSet, stage.DeployInProcess, stage.DeploySidecar},
		Source:      true,
		NewConfig:   func() any { return NewConfig() },
		New: func(s stage.Settings) (stage.Stage, error) {
			cfg, ok := s.Config.(*Config)
			if s.Config == nil {
				cfg, ok = NewConfig(), true
			}
			if !ok {
				return nil, fmt.Errorf("stage %s: config is %T, want *collector.Config", s.Name, s.Config)
			}
			return New(s, cfg), nil
		},
	}
}

// Stats are the collector's own figures, beyond stage.Counters.
// They are served as JSON on GET /api/v1/collectors/<stage name>; Lost and
// UntrackedCloses are also the stage's weft_stage_lost_total and
// weft_stage_untracked_total on /metrics, and the gaps in attribution are
// weft_stage_gaps_total{reason} (see Gaps).
type Stats struct {
	// Lost is the records the kernel could not put in the ring buffer: a
	// TCP close is two events (its connect/accept too) unless the sweep
	// had sent the connect/accept.
	Lost uint64 `json:"lost"`
	// UntrackedCloses is the TCP connections that closed without having
	// been seen open (open before the collector attached, or evicted
	// from the socket LRU: raise maxSockets if it grows): their close
	// events, with bytes and duration, were not sent, nor their
	// connect/accept unless the sweep had sent it.
	UntrackedCloses uint64 `json:"untracked_closes"`
	// UnownedAccepts is the server-side TCP connections whose listening
	// process was not known (a listen() without bind()): published with
	// the socket's cgroup (its container) and no process.
	UnownedAccepts uint64 `json:"unowned_accepts"`
	// UnixUnmatched is the unix connections whose client socket was
	// taken by accept() before the hook saw it: published under a
	// one-off id.
	UnixUnmatched uint64 `json:"unix_unmatched"`
	// MissedRuns is the hook runs the kernel skipped (the hook was
	// already running on that CPU when an interrupt ran it again): each
	// may have lost a record.
	MissedRuns uint64 `json:"missed_runs"`
	// Gaps in attribution (events published with what was known).
	UnknownCgroup    uint64 `json:"unknown_cgroup"`
	ProcessGone      uint64 `json:"process_gone"`
	PodNotInMetadata uint64 `json:"pod_not_in_metadata"`
	// OwnerUnresolved is the look-ups of a pod's ReplicaSet or Job that
	// failed (forbidden, API server away): those pods were published with
	// their controller as the workload until their next update.
	OwnerUnresolved uint64 `json:"owner_unresolved"`
	// Filtered and Undecodable records.
	Filtered    uint64 `json:"filtered"`
	Undecodable uint64 `json:"undecodable"`
	// Idle is set when the stage runs without eBPF (missing privileges).
	Idle bool `json:"idle"`
	// Probes are the probes attached.
	Probes []bpf.Probe `json:"probes"`
	// Unavailable is what this kernel cannot give (a probe or a part of
	// one), and Failed the programs it refused (their probes are off).
	Unavailable []bpf.Unavailable `json:"unavailable"`
	Failed      []string          `json:"failed"`
	// Degraded lists, one line each, what the collector cannot do.
	Degraded []string `json:"degraded"`
}

// Stage is a running collector.
type Stage struct {
	set  stage.Settings
	cfg  *Config
	log  *slog.Logger
	node string

	mu        sync.Mutex
	meta      metadata.Provider
	started   bool
	stopped   bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopPoll  context.CancelFunc // the poll loop alone, first at Shutdown
	pollDone  chan struct{}
	coll      *bpf.Collector
	pub       *publish.Publisher
	enr       *enrich.Enricher
	pipe      *Pipeline
	lost      atomic.Uint64
	untracked atomic.Uint64
	idle      atomic.Bool
	draining  atomic.Bool
	counters  *stage.Counters
}

var _ stage.Stage = (*Stage)(nil)

// New builds a collector stage; nothing starts until Start.
func New(s stage.Settings, cfg *Config) *Stage {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counters := s.Counters
	if counters == nil {
		counters = &stage.Counters{}
	}
	return &Stage{set: s, cfg: cfg, log: log, node: NodeName(s.Node), counters: counters}
}

// NodeName is the node this collector reports for: the runner's node, the
// downward API's NODE_NAME, or the host name.
func NodeName(fromSettings string) string {
	if fromSettings != "" {
		return fromSettings
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// Start loads and attaches the programs and starts reading. Without
// privileges it returns nil and stays idle (or fails when Required).
func (s *Stage) Start(ctx context.Context, host stage.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("collector %s: started twice", s.set.Name)
	}
	s.started = true
	// Served whatever happens next: idle, degraded or whole.
	host.Handle("GET /api/v1/collectors/"+s.set.Name, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.Stats())
	}))

	if err := bpf.CheckPrivileges(); err != nil {
		if s.cfg.Required {
			return fmt.Errorf("collector %s: %w", s.set.Name, err)
		}
		s.idle.Store(true)
		s.log.Warn("collector idle: this process cannot run eBPF; set required: true to make this an error", "missing", err.Error())
		return nil
	}

	meta, err := s.metadataProvider()
	if err != nil {
		return fmt.Errorf("collector %s: %w", s.set.Name, err)
	}
	s.meta = meta // under s.mu, held by Start
	coll, err := bpf.Open(bpf.Options{
		Probes: s.cfg.probes(), RingBufferBytes: s.cfg.RingBufferBytes, MaxSockets: s.cfg.MaxSockets,
		OpenAfter: s.openAfter(), ProgressEvery: s.cfg.ProgressInterval,
		// One wakeup per batch: an eighth of the ring, or 20ms.
		WakeupBytes: s.cfg.RingBufferBytes / 8, PollInterval: 20 * time.Millisecond,
		// A program the kernel refuses fails a required collector; any
		// other leaves its probe off and says so.
		Partial:  !s.cfg.Required,
		EditSpec: s.cfg.editSpec,
	})
	if err != nil {
		return fmt.Errorf("collector %s: %w", s.set.Name, err)
	}
	// What this kernel cannot give, or refused, said once each.
	for _, u := range coll.Unavailable() {
		s.log.Warn("collector: " + u.String())
	}
	for _, f := range coll.Failed() {
		s.log.Error("collector: " + f.Error() + "; that probe is off, the others run (required: true makes this fatal)")
	}
	pub, err := publish.New(host.JetStream().Conn(), publish.Config{
		Stage: s.set.Name, Node: s.node, Overflow: publish.OverflowDrop,
	}, s.counters, s.log)
	if err != nil {
		coll.Close()
		return fmt.Errorf("collector %s: %w", s.set.Name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.coll, s.pub, s.cancel = coll, pub, cancel
	s.enr = enrich.New(cgroup.NewResolver(), meta, func(p *schema.Pod) { s.publishPod(runCtx, schema.PodEvent_OP_UPSERT, p) })
	s.pipe = NewPipeline(s.node, s.cfg, decode.New(s.enr), publish.Partitioned(pub, partitions(s.set.Outputs)), s.counters)

	pollCtx, stopPoll := context.WithCancel(runCtx)
	s.stopPoll, s.pollDone = stopPoll, make(chan struct{})
	s.wg.Add(1)
	go s.read(runCtx)
	go s.poll(pollCtx)
	if w, ok := meta.(metadata.Watcher); ok {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := w.Run(runCtx, func(op metadata.Op, p *schema.Pod) { s.podChanged(runCtx, op, p) }); err != nil {
				s.log.Warn("pod metadata stopped", "err", err)
			}
		}()
	}
	if own := s.cfg.ownPod(); own != "" {
		s.log.Info("collector attached as a sidecar: it reports its own pod only", "node", s.node, "pod", own, "probes", s.cfg.Probes, "metadata", fmt.Sprintf("%T", meta))
		return nil
	}
	s.log.Info("collector attached", "node", s.node, "probes", s.cfg.Probes, "metadata", fmt.Sprintf("%T", meta))
	return nil
}

func (s *Stage) metadataProvider() (metadata.Provider, error) {
	m := s.cfg.Metadata
	switch m.Provider {
	case ProviderNone:
		return metadata.None{}, nil
	case ProviderFile:
		return metadata.NewFileProvider(m.File, s.node)
	case ProviderKubernetes:
		return metadata.NewKubeProvider(s.node)
	}
	// auto
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return metadata.NewKubeProvider(s.node)
	}
	if m.File != "" {
		return metadata.NewFileProvider(m.File, s.node)
	}
	return metadata.None{}, nil
}

func (s *Stage) read(ctx context.Context) {
	defer s.wg.Done()
	var rec ringbuf.Record
	for {
		if err := s.coll.Read(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || (errors.Is(err, ringbuf.ErrFlushed) && s.draining.Load()) {
				return
			}
			s.counters.Errors.Add(1)
			continue
		}
		if err := s.pipe.Handle(ctx, rec.RawSample); err != nil && ctx.Err() == nil {
			s.counters.Errors.Add(1)
		}
	}
}

// openAfter is the config's, or the default when it was never validated.
func (s *Stage) openAfter() time.Duration {
	if s.cfg.OpenAfter <= 0 {
		return NewConfig().OpenAfter
	}
	return s.cfg.OpenAfter
}

// poll folds the kernel's loss and untracked-close counters into the
// stage's Lost and Untracked counters, so they show in /metrics, and
// sweeps for the TCP connections open longer than OpenAfter, so their
// connect/accept events are published while they are open.
func (s *Stage) poll(ctx context.Context) {
	defer close(s.pollDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	sweep := time.NewTicker(s.openAfter() / 2)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.updateLost()
		case <-sweep.C:
			if err := s.coll.Sweep(); err != nil && ctx.Err() == nil {
				s.counters.Errors.Add(1)
				s.log.Warn("sweep for open connections", "err", err)
			}
		}
	}
}

func (s *Stage) updateLost() {
	if n, err := s.coll.Lost(); err == nil {
		if old := s.lost.Swap(n); n > old {
			s.counters.Lost.Add(n - old)
		}
	}
	if g, err := s.coll.Gaps(); err == nil {
		n := g.UntrackedCloses
		if old := s.untracked.Swap(n); n > old {
			s.counters.Untracked.Add(n - old)
		}
	}
}

// podChanged follows the metadata provider: an announced pod that changed
// is announced again at once (enrich.Enricher.Changed), a deleted one is
// announced deleted.
func (s *Stage) podChanged(ctx context.Context, op metadata.Op, p *schema.Pod) {
	if op == metadata.Delete {
		s.enr.Forget(p.GetUid())
		s.publishPod(ctx, schema.PodEvent_OP_DELETE, p)
		return
	}
	s.enr.Changed(p)
}

func (s *Stage) publishPod(ctx context.Context, op schema.PodEvent_Op, p *schema.Pod) {
	if own := s.cfg.ownPod(); own != "" && p.GetUid() != own {
		return // a sidecar announces its own pod only
	}
	ev := &schema.Event{
		TimeUnixNano: uint64(time.Now().UnixNano()),
		Body:         &schema.Event_Pod{Pod: &schema.PodEvent{Op: op, Pod: p}},
	}
	if err := s.pub.Publish(ctx, schema.EventSubject(s.node, schema.KindPod), ev); err != nil && ctx.Err() == nil {
		s.counters.Errors.Add(1)
	}
}

// Degraded says what the collector cannot do on this node (stage.Degrader):
// running without eBPF, a probe the kernel cannot give or refused.
func (s *Stage) Degraded() []string {
	s.mu.Lock()
	coll := s.coll
	s.mu.Unlock()
	var out []string
	if s.idle.Load() {
		out = append(out, "ebpf: idle, this process cannot run eBPF (see the log)")
	}
	if coll == nil {
		return out
	}
	for _, u := range coll.Unavailable() {
		out = append(out, u.String())
	}
	for _, f := range coll.Failed() {
		out = append(out, f.Error()+"; that probe is off")
	}
	return out
}

var _ stage.Degrader = (*Stage)(nil)

// Gaps are the collector's gap counts by reason, for
// weft_stage_gaps_total (stage.GapReporter): events published with what
// was known.
func (s *Stage) Gaps() map[string]uint64 {
	st := s.Stats()
	return map[string]uint64{
		"unowned_accept":      st.UnownedAccepts,
		"unix_unmatched":      st.UnixUnmatched,
		"missed_hook_run":     st.MissedRuns,
		"unknown_cgroup":      st.UnknownCgroup,
		"process_gone":        st.ProcessGone,
		"pod_not_in_metadata": st.PodNotInMetadata,
		"owner_unresolved":    st.OwnerUnresolved,
	}
}

// Stats returns the collector's figures so far.
func (s *Stage) Stats() Stats {
	s.mu.Lock()
	coll, pipe, enr := s.coll, s.pipe, s.enr
	s.mu.Unlock()
	st := Stats{Idle: s.idle.Load(), Probes: []bpf.Probe{}, Unavailable: []bpf.Unavailable{}, Failed: []string{}}
	st.Degraded = s.Degraded()
	if st.Degraded == nil {
		st.Degraded = []string{}
	}
	if coll != nil {
		st.Probes = append(st.Probes, coll.Probes()...)
		st.Unavailable = append(st.Unavailable, coll.Unavailable()...)
		for _, f := range coll.Failed() {
			st.Failed = append(st.Failed, f.Error())
		}
		if n, err := coll.Lost(); err == nil {
			st.Lost = n
		} else {
			st.Lost = s.lost.Load()
		}
		if g, err := coll.Gaps(); err == nil {
			st.UntrackedCloses, st.UnownedAccepts, st.UnixUnmatched, st.MissedRuns = g.UntrackedCloses, g.UnownedAccepts, g.UnixUnmatched, g.MissedRuns
		}
	}
	if pipe != nil {
		st.Filtered, st.Undecodable = pipe.Filtered.Load(), pipe.Undecodable.Load()
	}
	if enr != nil {
		st.UnknownCgroup = enr.Gaps.UnknownCgroup.Load()
		st.ProcessGone = enr.Gaps.ProcessGone.Load()
		st.PodNotInMetadata = enr.Gaps.PodNotInMetadata.Load()
	}
	s.mu.Lock()
	meta := s.meta
	s.mu.Unlock()
	if k, ok := meta.(interface{ OwnerLookupFailures() uint64 }); ok {
		st.OwnerUnresolved = k.OwnerLookupFailures()
	}
	return st
}

// Collector is the loaded eBPF side (nil when idle or not started); for
// tests that check what Shutdown detaches.
func (s *Stage) Collector() *bpf.Collector {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.coll
}

// Shutdown detaches every program, drains the reader and flushes the
// publisher until ctx ends. Idempotent; safe without Start.
func (s *Stage) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.coll == nil {
		s.stopped = true
		return nil
	}
	s.stopped = true
	// Detach first, then let the reader drain what the ring buffer already
	// holds, then flush the publisher.
	s.stopPoll()
	<-s.pollDone
	detachErr := s.coll.Detach()
	var sweepErr error
	if detachErr == nil {
		// Connections still open, too young for the sweep so far: their
		// connect/accept now, or never (their closes go unseen).
		sweepErr = s.coll.SweepAll(ctx)
	}
	s.draining.Store(true)
	_ = s.coll.Flush()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	s.cancel() // the other loops; the publisher drops rather than blocks
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.updateLost()
	closeErr := errors.Join(detachErr, s.coll.Close()) // unblocks a reader still running
	<-done
	pubErr := s.pub.Close(ctx)
	if closeErr != nil {
		closeErr = fmt.Errorf("collector %s: detach: %w", s.set.Name, closeErr)
	}
	if sweepErr != nil {
		sweepErr = fmt.Errorf("collector %s: %w", s.set.Name, sweepErr)
	}
	return errors.Join(closeErr, sweepErr, pubErr)
}

// partitions is how many partitions the output stream's connection events
// are split into.
func partitions(outs []stage.Stream) int {
	if len(outs) == 0 {
		return 1
	}
	return outs[0].Partitions
}
