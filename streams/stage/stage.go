// Package stage defines what a stage kind is: the lifecycle every stage
// implements, the settings it is built from, the host it runs in, and the
// registry that maps kind names to constructors. It must not import any
// stage kind; kinds import it.
package stage

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stage is one running piece of a topology. The runner calls Start on every
// stage, sinks first, and Shutdown on every stage, sources first.
//
// Start must return fast: long-running work goes to goroutines the stage
// owns, stopped by Shutdown. Shutdown drains what the stage holds (flushes
// publishers, finishes in-flight messages and acks them) until ctx expires,
// is idempotent, and is safe to call without Start.
type Stage interface {
	Start(ctx context.Context, host Host) error
	Shutdown(ctx context.Context) error
}

// GapReporter is a Stage that publishes events with part of what they
// should carry missing, and counts why (a collector: a process gone
// before enrichment, an accept whose listener is unknown, ...). The
// runner exports each count as weft_stage_gaps_total{reason}.
type GapReporter interface {
	// Gaps are the counts so far, by reason (snake_case, stable).
	Gaps() map[string]uint64
}

// Degrader is a Stage that runs with part of its job undone: a collector
// on a kernel that lacks a hook, or that refused a program. The runner
// lists what it says on /readyz (which stays ready: the stage does the
// rest) and exports weft_stage_degraded{stage,what}.
type Degrader interface {
	// Degraded says, one short line each, what the stage cannot do and
	// why; empty when it does everything. What comes before a line's
	// first colon names the part concerned (stable: the metric's "what"
	// label), e.g. "probe unix: this kernel has no ...".
	Degraded() []string
}

// Readier is a Stage that can be started yet unable to do its job for now:
// a graph stage whose Neo4j refuses it holds its input until Neo4j lets
// it write. Ready says why, nil when it can; while it is not nil the
// process's /readyz answers 503 with it.
type Readier interface {
	Ready() error
}

// Host is what the process running a stage offers it.
type Host interface {
	// JetStream is the connection to the streams.
	JetStream() jetstream.JetStream
	// Handle registers an HTTP handler on the process's HTTP server
	// (for example /api/v1/graph). Patterns follow http.ServeMux.
	Handle(pattern string, h http.Handler)
	// Fatal reports an error the stage cannot recover from after Start; the
	// process shuts down and exits non-zero with it.
	Fatal(err error)
}

// DeployMode is how a stage is deployed on a cluster.
type DeployMode string

// The deploy modes of DESIGN.md.
const (
	DeployInProcess   DeployMode = "inprocess"
	DeployDaemonSet   DeployMode = "daemonset"
	DeployDeployment  DeployMode = "deployment"
	DeployStatefulSet DeployMode = "statefulset"
	DeploySidecar     DeployMode = "sidecar"
)

// DeployModes lists every deploy mode, in documentation order.
var DeployModes = []DeployMode{DeployInProcess, DeployDaemonSet, DeployDeployment, DeployStatefulSet, DeploySidecar}

// Stream is a stream a stage reads or writes, as the topology declares it.
type Stream struct {
	Name     string
	Subjects []string
	// Partitions is how many partitions the stream's connection events are
	// split into (1 when the topology declares none).
	Partitions int
}

// Settings is everything a stage is built from.
type Settings struct {
	// Name is the stage's name in the topology; it names its durable
	// consumers and its DLQ subject (weft.dlq.<name>).
	Name string
	// Kind is the stage's kind.
	Kind string
	// Inputs and Outputs are the streams the stage reads and writes.
	Inputs  []Stream
	Outputs []Stream
	// Config is the value Kind.NewConfig returned, decoded from the stage's
	// `config:` and validated.
	Config any
	// Node is the name of the node this process runs on.
	Node string
	// NodeLocal is set for a stage that runs once per node (deploy
	// daemonset, or a sidecar of a daemonset stage): it reads only its
	// own node's EVENTS subjects, under a durable consumer of its node's.
	NodeLocal bool
	// DataDir is a directory the stage may keep state in (its own
	// subdirectory of the process's data dir), or "" when it has none.
	DataDir string
	// Logger is scoped to the stage.
	Logger *slog.Logger
	// Counters are the stage's counters; the runner exports them.
	Counters *Counters
	// Replay is set when the stage runs for `weft replay --to`.
	Replay *Replay
}

// Kind describes a stage kind.
type Kind struct {
	// Name is what `kind:` says in a topology.
	Name string
	// Description is one line for `weft topology show` and help texts.
	Description string
	// Deploy lists the deploy modes the kind can use; the first is its
	// default when a stage names none.
	Deploy []DeployMode
	// Source is true for kinds that produce data without inputs
	// (collectors, generators); they may have no inputs.
	Source bool
	// Sink is true for kinds that may have no outputs.
	Sink bool
	// NewConfig returns a pointer to the kind's config with defaults set.
	// The topology decodes `config:` into it strictly; if it has a
	// `Validate() error` method, that is called too. Nil means the kind
	// takes no config.
	NewConfig func() any
	// New builds a stage. It must not start anything.
	New func(Settings) (Stage, error)
}

// CanDeploy reports whether the kind can use mode.
func (k Kind) CanDeploy(mode DeployMode) bool { return slices.Contains(k.Deploy, mode) }

// Registry maps kind names to kinds. The zero value is empty and ready.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]Kind
}

// NewRegistry returns a registry holding kinds.
func NewRegistry(kinds ...Kind) *Registry {
	r := &Registry{}
	for _, k := range kinds {
		r.Register(k)
	}
	return r
}

// Register adds a kind. Registering a name twice panics: it is a
// programming error in cmd/weft, not an input error.
func (r *Registry) Register(k Kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = map[string]Kind{}
	}
	if _, dup := r.kinds[k.Name]; dup {
		panic(fmt.Sprintf("stage kind %q registered twice", k.Name))
	}
	if k.New == nil || len(k.Deploy) == 0 {
		panic(fmt.Sprintf("stage kind %q needs New and at least one deploy mode", k.Name))
	}
	r.kinds[k.Name] = k
}

// Lookup returns the kind named name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.kinds[name]
	return k, ok
}

// Names returns the registered kind names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NotImplemented returns a kind that validates like a real one but whose
// stages refuse to start, for kinds declared in topologies before this
// build has them.
func NotImplemented(name, description string, deploy []DeployMode, source, sink bool) Kind {
	return Kind{
		Name: name, Description: description + " (not implemented in this build)",
		Deploy: deploy, Source: source, Sink: sink,
		NewConfig: func() any { return &map[string]any{} },
		New: func(s Settings) (Stage, error) {
			return nil, fmt.Errorf("stage %s: kind %q is not implemented in this build", s.Name, name)
		},
	}
}

// DefaultShutdownTimeout bounds how long a stage may take to drain when the
// caller gives no deadline.
const DefaultShutdownTimeout = 30 * time.Second

// Replay, when set in Settings, makes a stage read a range of its inputs
// under a fresh, temporary durable instead of its own: `weft replay --to`.
// A stage needs to do nothing for it but build its consumers with
// consume.ConfigFor.
type Replay struct {
	// Durable is the temporary consumer name.
	Durable string
	// StartSeq or StartTime is where to start; neither means the first
	// message.
	StartSeq  uint64
	StartTime time.Time
	// UntilSeq and UntilTime end the range (inclusive); messages past them
	// are acked unprocessed.
	UntilSeq  uint64
	UntilTime time.Time
}
