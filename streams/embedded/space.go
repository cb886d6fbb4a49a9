package embedded

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Sizing the store to the disk: JetStream reserves a stream's maxBytes in
// its store when the stream is created and refuses the stream ("insufficient
// storage resources") when the reservations pass the store's maximum, which
// by default is a share of the disk free when the server starts. So a
// topology asking for two 1 GiB streams cannot start where less than about
// 2.7 GiB is free. Fit shrinks such defaults to what the disk holds.

const (
	// StoreShare is the part of the space available to the data dir that
	// `weft up` gives JetStream: the rest stays free for the machine.
	StoreShare = 0.5
	// MinStreamBytes is the least a fitted stream is given.
	MinStreamBytes = 64 << 20
)

// Available is the space JetStream can use under dataDir: what the
// filesystem has free for unprivileged users, plus what dataDir/jetstream
// already holds (the streams' own data is theirs to keep).
func Available(dataDir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dataDir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var used int64
	err := filepath.WalkDir(filepath.Join(dataDir, "jetstream"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a missing store dir holds nothing; an unreadable one is JetStream's to report
		}
		if info, err := d.Info(); err == nil {
			used += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dataDir, err)
	}
	return free + used, nil
}

// Fit is the outcome of fitting streams to the disk.
type Fit struct {
	// MaxBytes are the streams' sizes, by name: the wanted size, or less
	// when the streams did not fit.
	MaxBytes map[string]int64
	// MaxStore is the JetStream store maximum to start the server with.
	MaxStore int64
	// Shrunk says whether any stream was given less than it asked for.
	Shrunk bool
}

// FitStreams fits the streams' wanted maxBytes (by name; 0 means no
// limit and reserves nothing) into three quarters of StoreShare of avail:
// when they do not fit, each is scaled down by the same factor, to no
// less than MinStreamBytes. The last quarter is for the streams without a
// limit (DLQ), which JetStream refuses to create in a store its
// reservations fill. MaxStore is StoreShare of avail, or more when the
// floor puts the streams above it.
func FitStreams(avail int64, want map[string]int64) Fit {
	store := int64(float64(avail) * StoreShare)
	budget := store / 4 * 3
	var total int64
	for _, b := range want {
		total += b
	}
	f := Fit{MaxBytes: make(map[string]int64, len(want)), MaxStore: store}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	var fitted int64
	for _, n := range names {
		b := want[n]
		if b > 0 && total > budget {
			b = max(MinStreamBytes, int64(float64(b)*float64(budget)/float64(total)))
			b = min(b, want[n])
			f.Shrunk = f.Shrunk || b < want[n]
		}
		f.MaxBytes[n] = b
		fitted += b
	}
	f.MaxStore = max(f.MaxStore, fitted/3*4)
	return f
}
