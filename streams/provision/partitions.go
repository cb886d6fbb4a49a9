package provision

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
)

// partitionsOf is the partition count a stream definition records (1 when
// it records none: a stream made before partitions existed).
func partitionsOf(cfg jetstream.StreamConfig) (int, error) {
	v, ok := cfg.Metadata[schema.MetaPartitions]
	if !ok {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("stream %s: metadata %s=%q is not a partition count", cfg.Name, schema.MetaPartitions, v)
	}
	return n, nil
}

// setPartitions records n partitions in cfg's metadata (nothing for one,
// so a topology without partitions defines the same stream as before).
func setPartitions(cfg *jetstream.StreamConfig, n int) {
	if n <= 1 {
		return
	}
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[schema.MetaPartitions] = strconv.Itoa(n)
}

// checkPartitions refuses a topology whose partition count differs from
// the one the live stream was made with: collectors would publish to
// partitions no correlator reads, or split a connection's two sides.
func checkPartitions(have, want jetstream.StreamConfig) error {
	h, err := partitionsOf(have)
	if err != nil {
		return err
	}
	w, err := partitionsOf(want)
	if err != nil {
		return err
	}
	if h != w {
		return fmt.Errorf("stream %s: has %d partitions, the topology declares %d: the count is fixed for a stream's life; to change it, follow the migration in docs/scaling.md (drain, then recreate the correlator's consumers)", have.Name, h, w)
	}
	return nil
}
