// Package runner runs a topology's stages in one process: it builds the
// stages of the selected names from the registry, starts them sinks first
// (each gets its downstream running before it produces), and shuts them
// down sources first (so what a source flushes is still consumed), joining
// every error. It serves the process's HTTP endpoints (/healthz, /readyz,
// /metrics and what stages register) and exports the stages' counters.
//
// The runner imports no stage kind: kinds come from the stage.Registry.
package runner

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

// Options configure a Runner.
type Options struct {
	Topology *topology.Topology
	Registry *stage.Registry
	// Stages selects stages by name; empty runs all of them.
	Stages []string
	// JS is the connection to the streams.
	JS jetstream.JetStream
	// Node is this node's name.
	Node string
	// DataDir is the process's data dir; each stage gets DataDir/stages/<name>.
	// Empty means stages keep no local state.
	DataDir string
	Logger  *slog.Logger
	// Replay, when set, runs every selected stage over a replay range
	// (weft replay --to).
	Replay *stage.Replay
	// MetricReaders are added to the process's MeterProvider beside the
	// Prometheus one (an OTLP push of weft's own metrics, for one).
	MetricReaders []sdkmetric.Reader
	// APIToken, when set, is the bearer token every HTTP request needs
	// except /healthz, /readyz and /metrics (probes and Prometheus): the
	// graph API, the named queries and the service map are not for every
	// pod that reaches the port. A refused request counts in
	// weft_http_unauthorized_requests_total.
	APIToken string
}

// Runner runs stages. Start, Shutdown and the HTTP handler may be called
// from different goroutines.
type Runner struct {
	o       Options
	log     *slog.Logger
	nodes   []*node // sources first
	mux     *http.ServeMux
	metrics *Metrics

	started  atomic.Bool
	fatal    chan error
	fatalErr atomic.Pointer[error]

	shutdownOnce sync.Once
	shutdownErr  error
}

type node struct {
	def      *topology.Stage
	stage    stage.Stage
	counters *stage.Counters
	started  bool
}

// New builds the selected stages (nothing starts yet).
func New(o Options) (*Runner, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	t := o.Topology
	for _, name := range o.Stages {
		if t.Stage(name) == nil {
			var names []string
			for _, s := range t.Stages {
				names = append(names, s.Name)
			}
			return nil, fmt.Errorf("topology %s has no stage %q (it has: %v)", t.File, name, names)
		}
	}
	r := &Runner{o: o, log: o.Logger, mux: http.NewServeMux(), fatal: make(chan error, 1)}
	var errs []error
	for _, def := range t.Order() {
		if len(o.Stages) > 0 && !slices.Contains(o.Stages, def.Name) {
			continue
		}
		kind, ok := o.Registry.Lookup(def.Kind)
		if !ok {
			errs = append(errs, fmt.Errorf("stage %s: unknown kind %q", def.Name, def.Kind))
			continue
		}
		n := &node{def: def, counters: &stage.Counters{}}
		dir := ""
		if o.DataDir != "" {
			dir = filepath.Join(o.DataDir, "stages", def.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				errs = append(errs, fmt.Errorf("stage %s: data dir: %w", def.Name, err))
				continue
			}
		}
		st, err := kind.New(stage.Settings{
			Name: def.Name, Kind: def.Kind,
			Inputs: t.StageStreams(def.Inputs), Outputs: t.StageStreams(def.Outputs),
			Config: def.Config, Node: o.Node, NodeLocal: len(o.Stages) > 0 && t.NodeLocal(def), DataDir: dir,
			Logger:   o.Logger.With("stage", def.Name),
			Counters: n.counters,
			Replay:   o.Replay,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("stage %s: %w", def.Name, err))
			continue
		}
		n.stage = st
		r.nodes = append(r.nodes, n)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(r)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	r.routes()
	return r, nil
}

// Start starts every stage, sinks first. If one fails, the stages already
// started are shut down and the error returned.
func (r *Runner) Start(ctx context.Context) error {
	for i := len(r.nodes) - 1; i >= 0; i-- {
		n := r.nodes[i]
		r.log.Debug("starting stage", "stage", n.def.Name, "kind", n.def.Kind)
		if err := n.stage.Start(ctx, host{r}); err != nil {
			serr := r.Shutdown(context.WithoutCancel(ctx))
			return errors.Join(fmt.Errorf("start stage %s (%s): %w", n.def.Name, n.def.Kind, err), serr)
		}
		n.started = true
	}
	r.started.Store(true)
	return nil
}

// Shutdown stops the started stages sources first, each draining until
// ctx ends, and joins their errors. It is idempotent.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.shutdownOnce.Do(func() {
		r.started.Store(false)
		var errs []error
		for _, n := range r.nodes {
			if !n.started {
				continue
			}
			r.log.Debug("stopping stage", "stage", n.def.Name)
			if err := n.stage.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop stage %s: %w", n.def.Name, err))
			}
		}
		if r.metrics != nil {
			errs = append(errs, r.metrics.shutdown(ctx))
		}
		r.shutdownErr = errors.Join(errs...)
	})
	return r.shutdownErr
}

// Fatal delivers the first error a stage reported as fatal.
func (r *Runner) Fatal() <-chan error { return r.fatal }

// Ready reports whether every stage started, NATS is connected, and no
// stage says it cannot do its job (stage.Readier).
func (r *Runner) Ready() error {
	if !r.started.Load() {
		return errors.New("stages not started")
	}
	if e := r.fatalErr.Load(); e != nil {
		return *e
	}
	if nc := r.o.JS.Conn(); nc != nil && nc.Status() != nats.CONNECTED {
		return fmt.Errorf("nats %s", nc.Status())
	}
	var errs []error
	for _, n := range r.nodes {
		if rd, ok := n.stage.(stage.Readier); ok && n.started {
			if err := rd.Ready(); err != nil {
				errs = append(errs, fmt.Errorf("stage %s: %w", n.def.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Degraded lists what started stages cannot do (stage.Degrader), each
// line prefixed with the stage's name.
func (r *Runner) Degraded() []string {
	var out []string
	for _, n := range r.nodes {
		if d, ok := n.stage.(stage.Degrader); ok && r.started.Load() {
			for _, line := range d.Degraded() {
				out = append(out, n.def.Name+": "+line)
			}
		}
	}
	return out
}

// StageCounters is a stage's name, kind and counters.
type StageCounters struct {
	Name, Kind string
	stage.Snapshot
}

// Counters returns every stage's counters, sources first.
func (r *Runner) Counters() []StageCounters {
	out := make([]StageCounters, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = StageCounters{Name: n.def.Name, Kind: n.def.Kind, Snapshot: n.counters.Snapshot()}
	}
	return out
}

// Handler is the process's HTTP handler.
func (r *Runner) Handler() http.Handler {
	if r.o.APIToken == "" {
		return r.mux
	}
	want := []byte("Bearer " + r.o.APIToken)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			r.mux.ServeHTTP(w, req)
			return
		}
		if subtle.ConstantTimeCompare([]byte(req.Header.Get("Authorization")), want) != 1 {
			r.metrics.unauthorized.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="weft"`)
			http.Error(w, "unauthorized: this needs the release's API token (Authorization: Bearer …; see the chart's README)", http.StatusUnauthorized)
			return
		}
		r.mux.ServeHTTP(w, req)
	})
}

func (r *Runner) routes() {
	r.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if e := r.fatalErr.Load(); e != nil {
			http.Error(w, (*e).Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	r.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		deg := r.Degraded()
		if len(deg) == 0 {
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		var b strings.Builder
		b.WriteString("ready, degraded:\n")
		for _, d := range deg {
			fmt.Fprintf(&b, "  %s\n", d)
		}
		_, _ = w.Write([]byte(b.String()))
	})
	r.mux.Handle("GET /metrics", r.metrics.handler())
}

type host struct{ r *Runner }

func (h host) JetStream() jetstream.JetStream { return h.r.o.JS }

func (h host) Handle(pattern string, handler http.Handler) { h.r.mux.Handle(pattern, handler) }

func (h host) Fatal(err error) {
	if h.r.fatalErr.CompareAndSwap(nil, &err) {
		h.r.fatal <- err
	}
}
