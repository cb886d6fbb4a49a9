package collector

import (
	"context"
	"path"
	"slices"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/collectors/decode"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Publisher is where the pipeline sends events; streams/publish implements
// it. Publish must encode item before returning.
type Publisher interface {
	Publish(ctx context.Context, subject string, item proto.Message) error
}

// Pipeline is the user-space path of one ring buffer: decode → enrich →
// filter → encode → publish. Handle is for one goroutine.
type Pipeline struct {
	dec      *decode.Decoder
	pub      Publisher
	filter   filter
	counters *stage.Counters
	subjects map[string]string

	// Filtered counts events the namespace/process filters left out;
	// Undecodable counts records that were not a known layout.
	Filtered    atomic.Uint64
	Undecodable atomic.Uint64
}

// NewPipeline returns a pipeline for node publishing through pub.
func NewPipeline(node string, cfg *Config, dec *decode.Decoder, pub Publisher, counters *stage.Counters) *Pipeline {
	if counters == nil {
		counters = &stage.Counters{}
	}
	p := &Pipeline{dec: dec, pub: pub, counters: counters, filter: newFilter(cfg), subjects: map[string]string{}}
	for _, k := range []string{schema.KindProcess, schema.KindTCP, schema.KindUnix, schema.KindPod} {
		p.subjects[k] = schema.EventSubject(node, k)
	}
	return p
}

// Handle processes one ring-buffer record: one event, or two for a TCP
// close that stands for its connect/accept too. It returns only the
// publisher's error; an undecodable record is counted and skipped.
func (p *Pipeline) Handle(ctx context.Context, rec []byte) error {
	d, err := p.dec.Decode(rec)
	if err != nil {
		p.Undecodable.Add(1)
		p.counters.Errors.Add(1)
		return nil
	}
	n := uint64(1)
	if d.Open != nil {
		n = 2
	}
	p.counters.EventsIn.Add(n)
	if !p.filter.allow(d) {
		p.Filtered.Add(n)
		return nil
	}
	subject := p.subjects[d.Kind]
	if d.Open != nil {
		if err := p.pub.Publish(ctx, subject, d.Open); err != nil {
			return err
		}
	}
	return p.pub.Publish(ctx, subject, d.Event)
}

// filter is the config's namespace and process filters, and a sidecar's
// own pod.
type filter struct {
	pod                           string // only this pod's events, when set
	namespaces, excludeNamespaces []string
	processes, excludeProcesses   []string
	host                          bool
	none                          bool // nothing to check
}

func newFilter(c *Config) filter {
	f := filter{
		namespaces: c.Namespaces, excludeNamespaces: c.ExcludeNamespaces,
		processes: c.Processes, excludeProcesses: c.ExcludeProcesses, host: c.HostProcesses,
		pod: c.ownPod(),
	}
	f.none = len(f.namespaces)+len(f.excludeNamespaces)+len(f.processes)+len(f.excludeProcesses) == 0 && f.host && f.pod == ""
	return f
}

func (f *filter) allow(d decode.Decoded) bool {
	if f.none {
		return true
	}
	t := d.Event.GetTask()
	if f.pod != "" && t.GetPodUid() != f.pod {
		// A sidecar reports its own pod; the others' sidecars (or the
		// node's collector) report theirs.
		return false
	}
	if d.Pod == nil {
		if !f.host && t.GetPodUid() == "" {
			return false
		}
	} else {
		ns := d.Pod.GetNamespace()
		if len(f.namespaces) > 0 && !slices.Contains(f.namespaces, ns) {
			return false
		}
		if slices.Contains(f.excludeNamespaces, ns) {
			return false
		}
	}
	if len(f.processes) > 0 && !matchAny(f.processes, t) {
		return false
	}
	return !matchAny(f.excludeProcesses, t)
}

func matchAny(globs []string, t *schema.Task) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, t.GetComm()); ok {
			return true
		}
		if ok, _ := path.Match(g, t.GetExe()); ok {
			return true
		}
	}
	return false
}
