package collector

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/weftobs/weft/collectors/bpf"
)

// Config is a collector stage's `config:`.
//
//	config:
//	  probes: [process, tcp, unix]   # default: all
//	  ringBufferBytes: 8388608       # power of two, default 8 MiB
//	  maxSockets: 65536              # TCP sockets tracked until close (LRU)
//	  openAfter: 250ms               # connect/accept of longer connections sent while open
//	  progressInterval: 1s           # their byte totals sent this often while they change (0: never)
//	  namespaces: []                 # only pods in these namespaces (default all)
//	  excludeNamespaces: [kube-system]
//	  processes: []                  # only these comm/exe globs (default all)
//	  excludeProcesses: []
//	  hostProcesses: true            # events of processes in no pod
//	  pod: ""                        # a sidecar's own pod uid (default $WEFT_POD_UID): only its events
//	  metadata: {provider: auto, file: ""}  # auto | kubernetes | file | none
//	  required: false                # fail the stage without privileges or when the kernel refuses a program
type Config struct {
	Probes          []string `yaml:"probes" json:"probes"`
	RingBufferBytes int      `yaml:"ringBufferBytes" json:"ringBufferBytes"`
	MaxSockets      int      `yaml:"maxSockets" json:"maxSockets"`
	// OpenAfter: a TCP connection's connect/accept event is published
	// with its close when it closes sooner than this (the kernel sends one
	// record for both), else while it is open, by a sweep every
	// OpenAfter/2: typically within OpenAfter × 1.5 of its start (later
	// when the ring buffer is half full). Keep OpenAfter × 1.5 well under
	// the correlator's window (1s), which is how long one side of a
	// connection that closed waits for the other side's open.
	OpenAfter time.Duration `yaml:"openAfter" json:"openAfter"`
	// ProgressInterval: how often a connection reported open (see
	// OpenAfter) has its byte totals so far published, when they
	// changed, so its edge's bytes grow while it is open: they lag what
	// was sent by at most this (and OpenAfter/4). 0 publishes none (its
	// bytes come at its close).
	ProgressInterval  time.Duration `yaml:"progressInterval" json:"progressInterval"`
	Namespaces        []string      `yaml:"namespaces" json:"namespaces"`
	ExcludeNamespaces []string      `yaml:"excludeNamespaces" json:"excludeNamespaces"`
	Processes         []string      `yaml:"processes" json:"processes"`
	ExcludeProcesses  []string      `yaml:"excludeProcesses" json:"excludeProcesses"`
	HostProcesses     bool          `yaml:"hostProcesses" json:"hostProcesses"`
	// Pod, when set, makes the collector report only that pod (its uid):
	// what a collector running as a sidecar of the user's pods
	// (deploy: sidecar, sidecarOf: app) must do, since its hooks see the
	// whole node and every pod on it may have such a sidecar. Default
	// $WEFT_POD_UID, which the chart's sidecar snippet sets from the
	// downward API; unset, the collector reports its whole node.
	Pod      string         `yaml:"pod" json:"pod"`
	Metadata MetadataConfig `yaml:"metadata" json:"metadata"`
	// Required makes Start fail when the node cannot run eBPF (not root,
	// no CAP_BPF/CAP_PERFMON, no BTF) or the kernel refuses a program.
	// When false (default) the stage logs what is missing and stays idle,
	// or leaves the refused probe off and reports itself degraded, so
	// `weft up` works on any laptop. What a kernel lacks (a tracepoint
	// older kernels do not have) is never an error: it is said once and
	// shown on /readyz and /api/v1/collectors/<stage>.
	Required bool `yaml:"required" json:"required"`

	// editSpec, for tests, edits the programs before they load (to make
	// the kernel refuse one).
	editSpec func(*ebpf.CollectionSpec)
}

// MetadataConfig chooses the pod metadata provider.
type MetadataConfig struct {
	// Provider: auto (kubernetes when running in a cluster, else file when
	// File is set, else none), kubernetes, file or none.
	Provider string `yaml:"provider" json:"provider"`
	// File is the metadata file of the file provider (YAML or JSON).
	File string `yaml:"file" json:"file"`
}

// Metadata providers.
const (
	ProviderAuto       = "auto"
	ProviderKubernetes = "kubernetes"
	ProviderFile       = "file"
	ProviderNone       = "none"
)

// PodEnv is the variable that names a sidecar collector's own pod (its
// uid, from the downward API's metadata.uid) when the config does not.
const PodEnv = "WEFT_POD_UID"

// ownPod is the pod a sidecar collector reports ("" for the whole node).
func (c *Config) ownPod() string {
	if c.Pod != "" {
		return c.Pod
	}
	return strings.TrimSpace(os.Getenv(PodEnv))
}

// NewConfig returns the defaults.
func NewConfig() *Config {
	return &Config{
		Probes:           []string{string(bpf.ProbeProcess), string(bpf.ProbeTCP), string(bpf.ProbeUnix)},
		RingBufferBytes:  8 << 20,
		MaxSockets:       65536,
		OpenAfter:        250 * time.Millisecond,
		ProgressInterval: time.Second,
		HostProcesses:    true,
		Metadata:         MetadataConfig{Provider: ProviderAuto},
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	for _, p := range c.Probes {
		if !slices.Contains(bpf.AllProbes, bpf.Probe(p)) {
			errs = append(errs, fmt.Errorf("probes: unknown probe %q (want process, tcp or unix)", p))
		}
	}
	if n := c.RingBufferBytes; n < 4096 || n&(n-1) != 0 {
		errs = append(errs, fmt.Errorf("ringBufferBytes %d: want a power of two of at least 4096", n))
	}
	if c.MaxSockets < 1024 {
		errs = append(errs, fmt.Errorf("maxSockets %d: want at least 1024", c.MaxSockets))
	}
	if c.OpenAfter < 10*time.Millisecond || c.OpenAfter > time.Hour {
		errs = append(errs, fmt.Errorf("openAfter %v: want 10ms to 1h", c.OpenAfter))
	}
	if p := c.ProgressInterval; p != 0 && (p < c.OpenAfter/2 || p > time.Hour) {
		errs = append(errs, fmt.Errorf("progressInterval %v: want 0 (none) or openAfter/2 (the sweep's period) to 1h", p))
	}
	for _, g := range append(slices.Clone(c.Processes), c.ExcludeProcesses...) {
		if _, err := path.Match(g, ""); err != nil {
			errs = append(errs, fmt.Errorf("process pattern %q: %w", g, err))
		}
	}
	switch c.Metadata.Provider {
	case "", ProviderAuto, ProviderKubernetes, ProviderNone:
	case ProviderFile:
		if c.Metadata.File == "" {
			errs = append(errs, errors.New("metadata: provider file needs metadata.file"))
		}
	default:
		errs = append(errs, fmt.Errorf("metadata.provider %q: want auto, kubernetes, file or none", c.Metadata.Provider))
	}
	return errors.Join(errs...)
}

func (c *Config) probes() []bpf.Probe {
	out := make([]bpf.Probe, 0, len(c.Probes))
	for _, p := range c.Probes {
		out = append(out, bpf.Probe(p))
	}
	return out
}
