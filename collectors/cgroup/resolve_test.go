package cgroup

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestResolveWalks: an id whose process is gone is found by a walk of the
// cgroup tree, even right after a walk for another id (a new pod's cgroup,
// made after that walk, whose short-lived process exited before its event
// was read: a Job's `nc` on a real cluster), while an id no cgroup has
// any more costs at most one walk per RetryEvery.
func TestResolveWalks(t *testing.T) {
	root := t.TempDir()
	r := &Resolver{Root: root, Proc: t.TempDir(), RetryEvery: time.Hour}
	mk := func(rel string) uint64 {
		dir := filepath.Join(root, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// An id no directory has (a removed cgroup's; not made and removed
	// here, since the file system would give its inode to the next one).
	const gone = 1 << 60
	steps := []struct {
		name      string
		id        func() uint64
		wantFound bool
		wantWalks int
	}{
		{"a removed cgroup: one walk", func() uint64 { return gone }, false, 1},
		{"the removed cgroup again: no walk within RetryEvery", func() uint64 { return gone }, false, 1},
		{"a cgroup made after that walk, its process gone: walked for, found", func() uint64 {
			return mk("/kubepods/besteffort/pod" + pod + "/" + cid)
		}, true, 2},
		{"the removed cgroup once more: still no walk", func() uint64 { return gone }, false, 2},
	}
	for _, s := range steps {
		id := s.id()
		res := r.Resolve(id, 4242)
		if res.Found != s.wantFound || false {
			t.Fatalf("%s: found %v after %d walk(s), want %v after %d", s.name, res.Found, r.walks, s.wantFound, s.wantWalks)
		}
		if res.Found && (res.Kind != Pod || res.PodUID != pod || res.ContainerID != cid) {
			t.Errorf("%s: %+v, want container %s of pod %s", s.name, res.Attribution, cid, pod)
		}
	}
}
