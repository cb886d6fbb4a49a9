package embedded

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestFitStreams(t *testing.T) {
	const gib, mib = 1 << 30, 1 << 20
	tests := []struct {
		name     string
		avail    int64
		want     map[string]int64
		got      map[string]int64
		maxStore int64
		shrunk   bool
	}{
		{"fits", 10 * gib, map[string]int64{"EVENTS": gib, "CALLS": gib, "DLQ": 0}, map[string]int64{"EVENTS": gib, "CALLS": gib, "DLQ": 0}, 5 * gib, false},
		{"shrunk evenly", 2 * gib, map[string]int64{"EVENTS": gib, "CALLS": gib, "DLQ": 0}, map[string]int64{"EVENTS": 384 * mib, "CALLS": 384 * mib, "DLQ": 0}, gib, true},
		{"shrunk by share", 800 * mib, map[string]int64{"A": 200 * mib, "B": 400 * mib}, map[string]int64{"A": 100 * mib, "B": 200 * mib}, 400 * mib, true},
		{"floor", 100 * mib, map[string]int64{"EVENTS": gib, "CALLS": gib}, map[string]int64{"EVENTS": MinStreamBytes, "CALLS": MinStreamBytes}, 2 * MinStreamBytes / 3 * 4, true},
		{"floor never grows a stream", 100 * mib, map[string]int64{"A": gib, "B": 3 * mib}, map[string]int64{"A": MinStreamBytes, "B": 3 * mib}, (MinStreamBytes + 3*mib) / 3 * 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := FitStreams(tt.avail, tt.want)
			for n, b := range tt.got {
				if f.MaxBytes[n] != b {
					t.Errorf("%s: %d bytes, want %d", n, f.MaxBytes[n], b)
				}
			}
			if f.MaxStore != tt.maxStore || f.Shrunk != tt.shrunk {
				t.Errorf("max store %d shrunk %v, want %d %v", f.MaxStore, f.Shrunk, tt.maxStore, tt.shrunk)
			}
		})
	}
}

// smallDisk mounts a tmpfs of size bytes for the test, or skips when it
// cannot (mounting needs root).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestFittedStreamsStartOnSmallDisk starts the embedded server on a
// 600 MiB filesystem: the local topology's two 1 GiB streams are refused
// there ("insufficient storage resources"), and once fitted they are
// created.
func TestFittedStreamsStartOnSmallDisk(t *testing.T) {
	dir := smallDisk(t, "600m")
	avail, err := Available(dir)
	if err != nil {
		t.Fatal(err)
	}
	if avail > 600<<20 || avail < 500<<20 {
		t.Fatalf("available %d bytes on a 600 MiB tmpfs", avail)
	}
	want := map[string]int64{"EVENTS": 1 << 30, "CALLS": 1 << 30, "DLQ": 0}
	create := func(maxStore int64, sizes map[string]int64) error {
		s, err := Start(Options{DataDir: dir, Listen: "127.0.0.1:-1", MaxStore: maxStore})
		if err != nil {
			return err
		}
		defer s.Stop()
		nc, err := nats.Connect(s.URL())
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range []string{"EVENTS", "CALLS", "DLQ"} {
			limit := sizes[n]
			if limit == 0 {
				limit = -1 // no limit, as the topology's DLQ
			}
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n, Subjects: []string{"weft." + n + ".>"}, MaxBytes: limit, Storage: jetstream.FileStorage}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := create(0, want); err == nil {
		t.Fatal("two 1 GiB streams were created on 600 MiB: the test shows nothing")
	}
	if err := os.RemoveAll(dir + "/jetstream"); err != nil {
		t.Fatal(err)
	}
	f := FitStreams(avail, want)
	if !f.Shrunk || f.MaxBytes["EVENTS"]+f.MaxBytes["CALLS"] > avail {
		t.Fatalf("fit %+v for %d bytes available", f, avail)
	}
	if err := create(f.MaxStore, f.MaxBytes); err != nil {
		t.Fatalf("fitted streams %+v (max store %d): %v", f.MaxBytes, f.MaxStore, err)
	}
}
