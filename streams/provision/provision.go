// Package provision creates and updates the JetStream streams a topology
// declares. A change JetStream cannot apply in place (storage type, a
// replicas count the server cannot hold) is reported with the stream's
// name and what to do, never ignored. A live stream that differs from the
// topology (an operator's edit) is reported field by field (drift.go) and
// then either brought back to the topology or, with the stream's `onDrift:
// keep`, left as it is.
package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
)

// Defaults for limits a topology leaves out.
const (
	DefaultDuplicates = 2 * time.Minute
	DefaultDLQMaxAge  = 7 * 24 * time.Hour
)

// Action is what Ensure did to a stream.
type Action string

// Actions.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
	// Kept: the live stream differs from the topology and the stream's
	// onDrift is keep, so it was left as it is.
	Kept Action = "kept live"
	// Refused: the stream could not be created or brought to the
	// topology (the error says why).
	Refused Action = "refused"
)

// Result is what happened to one stream.
type Result struct {
	Stream string
	Action Action
	// Notes are adjustments made (replicas capped on a single server).
	Notes []string
	// Drift is every field in which the live stream differed from the
	// topology when it was found, whatever was then done about it.
	Drift []Drift
}

// Options adjust provisioning to the server.
type Options struct {
	// MaxReplicas caps replicas (1 on a single embedded server). Zero
	// means no cap.
	MaxReplicas int
}

// StreamConfig is the JetStream definition of a topology stream.
func StreamConfig(s *topology.Stream, o Options) (jetstream.StreamConfig, []string) {
	var notes []string
	cfg := jetstream.StreamConfig{
		Name:        s.Name,
		Description: "weft " + s.Name,
		Subjects:    s.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      time.Duration(s.MaxAge),
		MaxBytes:    int64(s.MaxBytes),
		MaxMsgs:     s.MaxMsgs,
		Replicas:    max(s.Replicas, 1),
		Duplicates:  time.Duration(s.Duplicates),
		Compression: jetstream.S2Compression,
	}
	if s.Compression == topology.CompressionNone {
		cfg.Compression = jetstream.NoCompression
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	if cfg.MaxMsgs == 0 {
		cfg.MaxMsgs = -1
	}
	if s.Storage == topology.StorageMemory {
		// Compression is of file blocks; a memory stream has none.
		cfg.Storage, cfg.Compression = jetstream.MemoryStorage, jetstream.NoCompression
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = DefaultDuplicates
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
	if s.Name == schema.StreamDLQ && cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultDLQMaxAge
	}
	if o.MaxReplicas > 0 && cfg.Replicas > o.MaxReplicas {
		notes = append(notes, fmt.Sprintf("replicas %d reduced to %d: the server is not clustered", cfg.Replicas, o.MaxReplicas))
		cfg.Replicas = o.MaxReplicas
	}
	return cfg, notes
}

// EnsureStreams creates or updates every stream of t. It tries every stream
// and joins the errors; a stream that failed has a Result too (Refused,
// with the drift found), so its differences can be shown.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, t *topology.Topology, o Options) ([]Result, error) {
	var results []Result
	var errs []error
	for _, s := range t.Streams {
		cfg, notes := StreamConfig(s, o)
		r, err := EnsureStream(ctx, js, cfg, s.OnDrift == topology.OnDriftKeep)
		r.Notes = append(notes, r.Notes...)
		if err != nil {
			r.Action = Refused
			errs = append(errs, err)
		}
		results = append(results, r)
	}
	return results, errors.Join(errs...)
}

// EnsureStream creates the stream, or updates it to cfg. A live stream
// that differs from cfg is reported in Result.Drift; with keepLive it is
// left as it is (Kept), else updated to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, keepLive bool) (Result, error) {
	r := Result{Stream: cfg.Name}
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return r, fmt.Errorf("stream %s: create: %w", cfg.Name, err)
		}
		r.Action = Created
		return r, nil
	case err != nil:
		return r, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	have := st.CachedInfo().Config
	r.Drift = Diff(have, cfg)
	if len(r.Drift) == 0 {
		r.Action = Unchanged
		return r, nil
	}
	if keepLive {
		r.Action = Kept
		return r, nil
	}
	if problems := immutableChanges(have, cfg); len(problems) > 0 {
		return r, fmt.Errorf("stream %s: cannot apply in place: %s; the stream keeps its current definition (to change it, back up and delete the stream, or declare a new stream)", cfg.Name, joinSemi(problems))
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return r, fmt.Errorf("stream %s: cannot apply in place: %w", cfg.Name, err)
	}
	r.Action = Updated
	return r, nil
}

func immutableChanges(have, want jetstream.StreamConfig) []string {
	var p []string
	if have.Storage != want.Storage {
		p = append(p, fmt.Sprintf("storage %s → %s", have.Storage, want.Storage))
	}
	if have.Retention != want.Retention {
		p = append(p, fmt.Sprintf("retention %s → %s", have.Retention, want.Retention))
	}
	return p
}

func joinSemi(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += "; "
		}
		out += x
	}
	return out
}
