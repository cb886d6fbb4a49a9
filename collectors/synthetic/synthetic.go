// Package synthetic is the `synthetic` stage kind: it publishes the
// events a small real cluster would give weft's collectors, in real time
// (see cluster.go: Deployments whose pods a ReplicaSet owns, a NATS
// broker, a process per container, long-lived broker connections, short
// calls, exec probes, crashing and restarted containers), so the pipeline
// runs end to end — for `weft up --demo`, tests and the service map's
// browser tests — before or without real collectors. It keeps the ground
// truth of what it published and serves it on GET /api/v1/demo/truth, so a
// test or a user can compare the graph with what the cluster did.
package synthetic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// TruthPath is where the stage serves its ground truth (Truth, as JSON,
// with "done": true once Total events were published).
const TruthPath = "/api/v1/demo/truth"

// Config is the kind's `config:`.
type Config struct {
	// Rate is events per second of short calls (four events each); 0
	// makes none, leaving the broker connections, probes and restarts.
	Rate int `yaml:"rate"`
	// Total ends the simulated cluster once this many events were
	// published, as a drained node (its connections close, its processes
	// exit); 0 runs until shutdown.
	Total int64 `yaml:"total"`
	// Nodes is how many nodes to simulate.
	Nodes int `yaml:"nodes"`
	// Pods is how many pods per node: one broker, the rest app pods.
	Pods int `yaml:"pods"`
	// BatchEvents is the publisher's events per message.
	BatchEvents int `yaml:"batchEvents"`
	// RestartEvery is how often an app pod restarts: in turn its container
	// crashes and is restarted, or the pod is deleted and its ReplicaSet
	// replaces it (default 60s; negative: never).
	RestartEvery time.Duration `yaml:"restartEvery"`
	// ProbeEvery is how often a pod runs an exec probe, a short process
	// (default 10s; negative: never).
	ProbeEvery time.Duration `yaml:"probeEvery"`
}

// Validate reports every problem in c.
func (c *Config) Validate() error {
	var errs []error
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %d < 0", c.Rate))
	}
	if c.Total < 0 {
		errs = append(errs, fmt.Errorf("total %d < 0", c.Total))
	}
	if c.Nodes < 1 || c.Nodes > 1000 {
		errs = append(errs, fmt.Errorf("nodes %d: want 1..1000", c.Nodes))
	}
	if c.Pods < 2 || c.Pods > 250 {
		errs = append(errs, fmt.Errorf("pods %d: want 2..250", c.Pods))
	}
	return errors.Join(errs...)
}

func (c *Config) options() Options {
	o := Options{Nodes: c.Nodes, Pods: c.Pods, CallsPerSecond: float64(c.Rate) / 4, RestartEvery: c.RestartEvery, ProbeEvery: c.ProbeEvery}
	if o.RestartEvery == 0 {
		o.RestartEvery = time.Minute
	}
	if o.ProbeEvery == 0 {
		o.ProbeEvery = 10 * time.Second
	}
	o.RestartEvery, o.ProbeEvery = max(o.RestartEvery, 0), max(o.ProbeEvery, 0)
	return o
}

// Kind is the synthetic stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "synthetic",
		Description: "publishes a simulated small cluster's events in real time, and its ground truth",
		Deploy:      []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment, stage.DeployDaemonSet},
		Source:      true, Sink: true,
		NewConfig: func() any { return &Config{Rate: 1000, Nodes: 1, Pods: 8} },
		New:       New,
	}
}

// Stage publishes the simulated cluster's events.
type Stage struct {
	s      stage.Settings
	cfg    Config
	log    *slog.Logger
	pubs   map[string]*publish.Publisher    // by simulated node
	parts  map[string]publish.ItemPublisher // pubs, split by EVENTS partition
	gen    *Generator
	sent   atomic.Int64
	fin    atomic.Bool // Total reached
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error
}

var _ stage.Stage = (*Stage)(nil)

// New builds a synthetic stage.
func New(s stage.Settings) (stage.Stage, error) {
	cfg, ok := s.Config.(*Config)
	if !ok || cfg == nil {
		cfg = Kind().NewConfig().(*Config)
	}
	if len(s.Outputs) != 1 {
		return nil, fmt.Errorf("synthetic needs exactly one output stream, has %d", len(s.Outputs))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", s.Name, err)
	}
	return &Stage{s: s, cfg: *cfg, log: s.Logger, gen: NewGenerator(s.Node, cfg.options())}, nil
}

// Start starts publishing.
func (st *Stage) Start(ctx context.Context, host stage.Host) error {
	out := st.s.Outputs[0]
	if !publishable(out, schema.EventSubject("n", schema.KindTCP)) {
		return fmt.Errorf("output stream %s (subjects %v) does not take %s…", out.Name, out.Subjects, schema.EventsPrefix)
	}
	// One publisher per simulated node, as each node's collector
	// publishes its own batches (their origin names the node).
	st.pubs = map[string]*publish.Publisher{}
	for _, node := range st.gen.NodeNames() {
		pub, err := publish.New(host.JetStream().Conn(), publish.Config{
			Stage: st.s.Name, Node: node, MaxBatchItems: st.cfg.BatchEvents,
		}, st.s.Counters, st.log)
		if err != nil {
			_ = st.closePublishers(ctx)
			return err
		}
		st.pubs[node] = pub
	}
	st.parts = map[string]publish.ItemPublisher{}
	for node, pub := range st.pubs {
		st.parts[node] = publish.Partitioned(pub, out.Partitions)
	}
	host.Handle(TruthPath, http.HandlerFunc(st.serveTruth))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st.cancel = cancel
	st.done = make(chan struct{})
	go func() {
		defer close(st.done)
		if err := st.run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			host.Fatal(fmt.Errorf("stage %s: %w", st.s.Name, err))
		}
	}()
	return nil
}

func publishable(s stage.Stream, subject string) bool {
	for _, f := range s.Subjects {
		if matches(f, subject) {
			return true
		}
	}
	return false
}

// matches reports whether subject matches the filter.
func matches(filter, subject string) bool {
	f, s := splitDots(filter), splitDots(subject)
	for i := range f {
		if f[i] == ">" {
			return len(s) > i
		}
		if i >= len(s) || (f[i] != "*" && f[i] != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// run publishes until Total, shutdown, or an error, stepping the
// simulated cluster every 10ms of real time.
func (st *Stage) run(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if st.cfg.Total > 0 && st.sent.Load() >= st.cfg.Total {
			// The simulated cluster ends as a drained node: its
			// connections close and its processes exit, so the truth is
			// final (nothing open) and the graph must match it.
			for _, e := range st.gen.Stop(time.Now()) {
				if err := st.parts[e.Node].Publish(ctx, e.Subject, e.Event); err != nil {
					return err
				}
				st.sent.Add(1)
			}
			st.fin.Store(true)
			st.log.Info("demo: published its total; the simulated cluster stands still", "events", st.sent.Load())
			return nil
		}
		for _, e := range st.gen.Step(time.Now()) {
			if err := st.parts[e.Node].Publish(ctx, e.Subject, e.Event); err != nil {
				return err
			}
			st.sent.Add(1)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// truthJSON is what TruthPath serves.
type truthJSON struct {
	Truth
	// Done is true once the stage published its Total and stopped.
	Done bool `json:"done"`
}

func (st *Stage) serveTruth(w http.ResponseWriter, _ *http.Request) {
	done := st.fin.Load() // before reading the truth: done means final
	t := st.gen.Truth()
	t.Events = st.sent.Load()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(truthJSON{Truth: t, Done: done})
}

// Shutdown stops generating and flushes what was generated.
func (st *Stage) Shutdown(ctx context.Context) error {
	st.once.Do(func() {
		if st.cancel != nil {
			st.cancel()
			<-st.done
		}
		st.err = st.closePublishers(ctx)
	})
	return st.err
}

func (st *Stage) closePublishers(ctx context.Context) error {
	var errs []error
	for _, p := range st.pubs {
		errs = append(errs, p.Close(ctx))
	}
	return errors.Join(errs...)
}
