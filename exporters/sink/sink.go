// Package sink is the `sink` stage kind: it consumes its inputs, decodes
// every batch, counts what it saw by event kind and acks. It ends a
// pipeline that has no real exporter yet, and is what tests and benchmarks
// consume with. An undecodable message goes to the DLQ.
package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Kind is the sink stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "sink",
		Description: "consumes, decodes and counts; for demos, tests and benchmarks",
		Deploy:      []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment},
		Sink:        true,
		New:         New,
	}
}

// Stage is a running sink.
type Stage struct {
	s         stage.Settings
	consumers []*consume.Consumer
	once      sync.Once
	err       error

	// Counts by body kind ("tcp", "exec", "call", …).
	mu     sync.Mutex
	counts map[string]uint64
	total  atomic.Uint64
}

var _ stage.Stage = (*Stage)(nil)

// New builds a sink.
func New(s stage.Settings) (stage.Stage, error) {
	return &Stage{s: s, counts: map[string]uint64{}}, nil
}

// Start starts one durable consumer per input.
func (st *Stage) Start(ctx context.Context, host stage.Host) error {
	for _, in := range st.s.Inputs {
		c, err := consume.Start(ctx, host.JetStream(), consume.ConfigFor(st.s, in), st.handle, st.s.Counters, st.s.Logger)
		if err != nil {
			return errors.Join(err, st.Shutdown(ctx))
		}
		st.consumers = append(st.consumers, c)
	}
	return nil
}

func (st *Stage) handle(_ context.Context, m jetstream.Msg) error {
	counts, n, err := Count(m.Headers().Get(schema.HeaderType), m.Data())
	if err != nil {
		return consume.Permanent(err)
	}
	st.mu.Lock()
	for k, v := range counts {
		st.counts[k] += v
	}
	st.mu.Unlock()
	st.total.Add(n)
	return nil
}

// Count decodes a batch of the given type and counts its items by kind.
func Count(typ string, data []byte) (map[string]uint64, uint64, error) {
	counts := map[string]uint64{}
	switch typ {
	case schema.TypeName(&schema.CallBatch{}):
		b, err := schema.DecodeCallBatch(data)
		if err != nil {
			return nil, 0, err
		}
		counts["call"] = uint64(len(b.Calls))
		return counts, uint64(len(b.Calls)), nil
	case schema.TypeName(&schema.EventBatch{}), "":
		b, err := schema.DecodeEventBatch(data)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range b.Events {
			counts[BodyKind(e)]++
		}
		return counts, uint64(len(b.Events)), nil
	default:
		return nil, 0, fmt.Errorf("unknown message type %q", typ)
	}
}

// BodyKind names an event's body: exec, exit, tcp, unix or pod.
func BodyKind(e *schema.Event) string {
	switch e.GetBody().(type) {
	case *schema.Event_Exec:
		return "exec"
	case *schema.Event_Exit:
		return "exit"
	case *schema.Event_Tcp:
		return "tcp"
	case *schema.Event_Unix:
		return "unix"
	case *schema.Event_Pod:
		return "pod"
	}
	return "unknown"
}

// Total is how many items the sink has counted.
func (st *Stage) Total() uint64 { return st.total.Load() }

// Counts returns a copy of the counts by kind.
func (st *Stage) Counts() map[string]uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]uint64, len(st.counts))
	for k, v := range st.counts {
		out[k] = v
	}
	return out
}

// Shutdown stops the consumers after the messages they hold are handled.
func (st *Stage) Shutdown(ctx context.Context) error {
	st.once.Do(func() {
		var errs []error
		for _, c := range st.consumers {
			errs = append(errs, c.Stop(ctx))
		}
		st.err = errors.Join(errs...)
	})
	return st.err
}
