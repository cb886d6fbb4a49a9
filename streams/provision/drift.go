package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/topology"
)

// Drift is one field in which a live stream differs from its topology
// declaration, both values as a user would write them.
type Drift struct {
	Stream   string
	Field    string // the topology's key (maxAge, maxBytes, …)
	Live     string
	Topology string
}

// String is the drift as one line: `stream EVENTS: maxAge live 1h0m0s, topology 24h0m0s`.
func (d Drift) String() string {
	return fmt.Sprintf("stream %s: %s live %s, topology %s", d.Stream, d.Field, d.Live, d.Topology)
}

// Diff lists every field provisioning sets in which live differs from
// want, in the order of the topology's keys. Fields the server fills in
// on its own (and provisioning leaves alone) are not compared, so a
// stream provisioned from want has no drift.
func Diff(live, want jetstream.StreamConfig) []Drift {
	var out []Drift
	add := func(field string, differ bool, l, w string) {
		if differ {
			out = append(out, Drift{Stream: want.Name, Field: field, Live: l, Topology: w})
		}
	}
	add("subjects", !slices.Equal(live.Subjects, want.Subjects), "["+strings.Join(live.Subjects, ", ")+"]", "["+strings.Join(want.Subjects, ", ")+"]")
	add("maxAge", live.MaxAge != want.MaxAge, limitDuration(live.MaxAge), limitDuration(want.MaxAge))
	add("maxBytes", live.MaxBytes != want.MaxBytes, limit(live.MaxBytes), limit(want.MaxBytes))
	add("maxMsgs", live.MaxMsgs != want.MaxMsgs, limit(live.MaxMsgs), limit(want.MaxMsgs))
	add("replicas", live.Replicas != want.Replicas, fmt.Sprint(live.Replicas), fmt.Sprint(want.Replicas))
	add("storage", live.Storage != want.Storage, storage(live.Storage), storage(want.Storage))
	add("duplicates", live.Duplicates != want.Duplicates, live.Duplicates.String(), want.Duplicates.String())
	add("compression", live.Compression != want.Compression, compression(live.Compression), compression(want.Compression))
	add("retention", live.Retention != want.Retention, live.Retention.String(), want.Retention.String())
	add("discard", live.Discard != want.Discard, live.Discard.String(), want.Discard.String())
	add("description", live.Description != want.Description, fmt.Sprintf("%q", live.Description), fmt.Sprintf("%q", want.Description))
	return out
}

func limit(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

func limitDuration(d time.Duration) string {
	if d == 0 {
		return "unlimited"
	}
	return d.String()
}

// storage and compression are spelled as in the topology.
func storage(s jetstream.StorageType) string {
	if s == jetstream.MemoryStorage {
		return "memory"
	}
	return "file"
}

func compression(c jetstream.StoreCompression) string {
	if c == jetstream.S2Compression {
		return "s2"
	}
	return "none"
}

// DiffStreams is every drift of t's streams from the live ones, changing
// nothing; missing are the streams not created yet.
func DiffStreams(ctx context.Context, js jetstream.JetStream, t *topology.Topology, o Options) (drift []Drift, missing []string, err error) {
	for _, s := range t.Streams {
		want, _ := StreamConfig(s, o)
		st, err := js.Stream(ctx, s.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, s.Name)
			continue
		}
		if err != nil {
			return drift, missing, fmt.Errorf("stream %s: %w", s.Name, err)
		}
		drift = append(drift, Diff(st.CachedInfo().Config, want)...)
	}
	return drift, missing, nil
}
