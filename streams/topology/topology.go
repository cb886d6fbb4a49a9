// Package topology is the declaration of a weft deployment: streams, and
// stages of registered kinds connected by them. It decodes the YAML format
// of DESIGN.md strictly, validates it reporting every problem at once with
// file:line and the stage or stream concerned, and renders it as text,
// JSON, DOT or Mermaid.
//
// It knows stage kinds only through a stage.Registry; it runs nothing (see
// streams/runner).
package topology

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/weftobs/weft/streams/stage"
)

// APIVersion and Kind are the only document header this build reads.
const (
	APIVersion = "weft.dev/v1"
	DocKind    = "Topology"
)

// Topology is a decoded, validated topology.
type Topology struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	// Streams in file order.
	Streams []*Stream `yaml:"-" json:"streams"`
	Stages  []*Stage  `yaml:"stages" json:"stages"`

	// File is where the topology was read from (for messages).
	File string `yaml:"-" json:"-"`

	// The raw streams mapping, decoded into Streams by Parse.
	RawStreams yaml.Node `yaml:"streams" json:"-"`
}

// Metadata names a topology.
type Metadata struct {
	Name   string            `yaml:"name" json:"name"`
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Stream is a JetStream stream the topology declares. Zero limits mean the
// defaults of StreamDefaults.
type Stream struct {
	Name       string   `yaml:"-" json:"name"`
	Subjects   []string `yaml:"subjects" json:"subjects"`
	MaxAge     Duration `yaml:"maxAge,omitempty" json:"maxAge,omitempty"`
	MaxBytes   ByteSize `yaml:"maxBytes,omitempty" json:"maxBytes,omitempty"`
	MaxMsgs    int64    `yaml:"maxMsgs,omitempty" json:"maxMsgs,omitempty"`
	Replicas   int      `yaml:"replicas,omitempty" json:"replicas,omitempty"`
	Storage    string   `yaml:"storage,omitempty" json:"storage,omitempty"`
	Duplicates Duration `yaml:"duplicates,omitempty" json:"duplicates,omitempty"`
	// Compression is how JetStream stores the stream's blocks on disk:
	// "s2" (the default) or "none".
	Compression string `yaml:"compression,omitempty" json:"compression,omitempty"`
	// OnDrift says what provisioning does when the live stream differs
	// from this declaration (an operator's `nats stream edit`): "apply"
	// the topology (the default) or "keep" the live configuration. Either
	// way every difference is reported, field by field.
	OnDrift string `yaml:"onDrift,omitempty" json:"onDrift,omitempty"`
	// Partitions splits the stream's connection events into this many
	// partitions, each read by one correlator replica at a time (EVENTS
	// only; 0 or 1 means one). It is fixed for the stream's life:
	// changing it is a migration (docs/scaling.md).
	Partitions int `yaml:"partitions,omitempty" json:"partitions,omitempty"`
	// Implicit is set for a stream the topology uses without declaring
	// (DLQ).
	Implicit bool `yaml:"-" json:"implicit,omitempty"`
	Line     int  `yaml:"-" json:"-"`
}

// Storage kinds.
const (
	StorageFile   = "file"
	StorageMemory = "memory"
)

// Compression algorithms of a stream's storage.
const (
	CompressionS2   = "s2"
	CompressionNone = "none"
)

// What provisioning does with a live stream that differs from the topology.
const (
	OnDriftApply = "apply"
	OnDriftKeep  = "keep"
)

// Stage is one stage of the topology.
type Stage struct {
	Name      string           `yaml:"name" json:"name"`
	Kind      string           `yaml:"kind" json:"kind"`
	Deploy    stage.DeployMode `yaml:"deploy,omitempty" json:"deploy"`
	Replicas  int              `yaml:"replicas,omitempty" json:"replicas,omitempty"`
	Inputs    []string         `yaml:"inputs,omitempty" json:"inputs,omitempty"`
	Outputs   []string         `yaml:"outputs,omitempty" json:"outputs,omitempty"`
	SidecarOf string           `yaml:"sidecarOf,omitempty" json:"sidecarOf,omitempty"`
	Autoscale *Autoscale       `yaml:"autoscale,omitempty" json:"autoscale,omitempty"`
	// RawConfig is the stage's `config:`; the kind decodes it.
	RawConfig yaml.Node `yaml:"config,omitempty" json:"-"`
	// Config is RawConfig decoded into the kind's config, set by Parse.
	Config any `yaml:"-" json:"config,omitempty"`

	Line int            `yaml:"-" json:"-"`
	keys map[string]int // key → line
}

// Autoscale bounds a HorizontalPodAutoscaler.
type Autoscale struct {
	Min              int `yaml:"min" json:"min"`
	Max              int `yaml:"max" json:"max"`
	TargetCPUPercent int `yaml:"targetCPUPercent,omitempty" json:"targetCPUPercent,omitempty"`
}

// KeyLine is the line of key in the stage's mapping, or the stage's line.
func (s *Stage) KeyLine(key string) int {
	if l, ok := s.keys[key]; ok {
		return l
	}
	return s.Line
}

// Stage returns the stage named name, or nil.
func (t *Topology) Stage(name string) *Stage {
	for _, s := range t.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Stream returns the stream named name, or nil.
func (t *Topology) Stream(name string) *Stream {
	for _, s := range t.Streams {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// NodeLocal tells whether def runs once per node: a DaemonSet, or a
// sidecar in a DaemonSet's pods. Only a process that runs some stages of
// a topology (weft run --stage, a cluster's workload) runs them so; one
// that runs them all (weft up) runs each once for every node.
func (t *Topology) NodeLocal(def *Stage) bool {
	switch def.Deploy {
	case stage.DeployDaemonSet:
		return true
	case stage.DeploySidecar:
		if host := t.Stage(def.SidecarOf); host != nil {
			return host.Deploy == stage.DeployDaemonSet
		}
	}
	return false
}

// StageStreams resolves a stage's stream names to stage.Streams.
func (t *Topology) StageStreams(names []string) []stage.Stream {
	out := make([]stage.Stream, 0, len(names))
	for _, n := range names {
		if s := t.Stream(n); s != nil {
			out = append(out, stage.Stream{Name: s.Name, Subjects: s.Subjects, Partitions: max(s.Partitions, 1)})
		}
	}
	return out
}

// Duration is a time.Duration written as "24h", "90m" or "7d".
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalText writes the duration as a string (JSON).
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ParseDuration is time.ParseDuration that also takes whole days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("duration %q: want e.g. 90s, 24h or 7d", s)
		}
		if n > maxDays {
			return 0, fmt.Errorf("duration %q: at most %dd", s, maxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 90s, 24h or 7d", s)
	}
	return d, nil
}

// maxDays is the most days a time.Duration holds.
const maxDays = int(math.MaxInt64 / int64(24*time.Hour))

// ByteSize is a size written as 1073741824, "512MiB", "10GiB" or "1G".
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// UnmarshalYAML parses a size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = ByteSize(v)
	return nil
}

// ParseByteSize parses a size with an optional unit.
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want bytes, or e.g. 512MiB, 10GiB", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: more than %d bytes", s, int64(math.MaxInt64))
	}
	return n * mult, nil
}

// Issue is one problem in a topology file.
type Issue struct {
	File string
	Line int
	// Subject is what the issue concerns: `stage "x"`, `stream "Y"`, or "".
	Subject string
	Msg     string
}

func (i Issue) String() string {
	var b strings.Builder
	b.WriteString(i.File)
	if i.Line > 0 {
		b.WriteString(":" + strconv.Itoa(i.Line))
	}
	b.WriteString(": ")
	if i.Subject != "" {
		b.WriteString(i.Subject + ": ")
	}
	b.WriteString(i.Msg)
	return b.String()
}

// Error is every issue found in a topology, sorted by line.
type Error struct {
	Issues []Issue
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		lines[i] = is.String()
	}
	return strings.Join(lines, "\n")
}

type issues struct {
	file string
	list []Issue
}

func (is *issues) add(line int, subject, format string, args ...any) {
	is.list = append(is.list, Issue{File: is.file, Line: line, Subject: subject, Msg: fmt.Sprintf(format, args...)})
}

func (is *issues) err() error {
	if len(is.list) == 0 {
		return nil
	}
	sort.SliceStable(is.list, func(a, b int) bool { return is.list[a].Line < is.list[b].Line })
	return &Error{Issues: is.list}
}

func stageSubject(name string) string  { return fmt.Sprintf("stage %q", name) }
func streamSubject(name string) string { return fmt.Sprintf("stream %q", name) }
