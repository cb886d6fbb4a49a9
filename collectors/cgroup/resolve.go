package cgroup

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Resolver maps the cgroup v2 id the kernel reports for a task (what
// bpf_get_current_cgroup_id returns: the cgroup directory's inode number)
// to its path and attribution. Results are cached by id. An id that
// resolves to nothing starts a walk of the cgroup tree unless a walk has
// already looked for it (begun after it was first asked about) within
// RetryEvery: a cgroup made since the last walk (a new pod whose first
// process was gone before its event was read) is found at once, while a
// removed cgroup's id costs at most one walk per RetryEvery. Safe for
// concurrent use.
type Resolver struct {
	// Root is the cgroup v2 mount point ("" when the host has none).
	Root string
	// Proc is the proc mount, default /proc.
	Proc string
	// RetryEvery bounds how often an unresolved id triggers a walk of the
	// cgroup tree. Default 1s.
	RetryEvery time.Duration

	mu       sync.Mutex
	byID     map[uint64]Result
	lastWalk time.Time
	// walks counts the walks begun; asked holds, for each id not yet
	// found, how many had begun when it was first looked for.
	walks int
	asked map[uint64]int
}

// Result is a resolved cgroup.
type Result struct {
	Path string
	Attribution
	// Found is false when the id matched no cgroup (it was removed, or
	// the process exited before enrichment and left nothing to read).
	Found bool
}

// maxCached bounds the id cache; past it the cache is cleared (ids are
// re-resolved on demand, cheaply, from the next walk).
const maxCached = 1 << 16

// NewResolver returns a resolver for the cgroup v2 hierarchy found in
// /proc/self/mountinfo (pure v2 at /sys/fs/cgroup, or the hybrid layout's
// /sys/fs/cgroup/unified).
func NewResolver() *Resolver {
	return &Resolver{Root: FindV2Mount("/proc/self/mountinfo"), Proc: "/proc"}
}

// FindV2Mount returns the mount point of the first cgroup2 filesystem in a
// mountinfo file, or "".
func FindV2Mount(mountinfo string) string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// … mount-point … - fstype source options
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4]
			}
		}
	}
	return ""
}

// Resolve returns the cgroup of id, using pid's /proc entry as the fast
// path and a walk of the cgroup tree when the process is gone.
func (r *Resolver) Resolve(id uint64, pid uint32) Result {
	r.mu.Lock()
	if res, ok := r.byID[id]; ok {
		r.mu.Unlock()
		return res
	}
	r.mu.Unlock()

	res := r.fromProc(id, pid)
	if !res.Found {
		res = r.fromWalk(id)
	}
	if res.Found {
		r.store(id, res)
	}
	return res
}

// ProcV1 parses /proc/<pid>/cgroup for hosts where the v2 id says nothing
// (v1-only: every task is in the v2 root). Not cached: ids do not tell
// these processes apart.
func (r *Resolver) ProcV1(pid uint32) (Attribution, bool) {
	b, err := os.ReadFile(filepath.Join(r.proc(), strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return Attribution{}, false
	}
	_, a := ParseProcCgroup(string(b))
	return a, true
}

func (r *Resolver) proc() string {
	if r.Proc == "" {
		return "/proc"
	}
	return r.Proc
}

func (r *Resolver) store(id uint64, res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID == nil || len(r.byID) >= maxCached {
		r.byID = map[uint64]Result{}
	}
	r.byID[id] = res
}

func (r *Resolver) fromProc(id uint64, pid uint32) Result {
	if pid == 0 {
		return Result{}
	}
	b, err := os.ReadFile(filepath.Join(r.proc(), strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return Result{}
	}
	v2, a := ParseProcCgroup(string(b))
	if r.Root != "" && v2 != "" {
		// The process may have moved since the event: check the id.
		if ino, ok := inode(filepath.Join(r.Root, v2)); !ok || ino != id {
			return Result{}
		}
	}
	return Result{Path: v2, Attribution: a, Found: true}
}

// fromWalk indexes every cgroup directory by inode and looks id up.
func (r *Resolver) fromWalk(id uint64) Result {
	if r.Root == "" {
		return Result{}
	}
	every := r.RetryEvery
	if every == 0 {
		every = time.Second
	}
	r.mu.Lock()
	gen, ok := r.asked[id]
	if !ok {
		if r.asked == nil || len(r.asked) >= maxCached {
			r.asked = map[uint64]int{}
		}
		gen = r.walks
		r.asked[id] = gen
	}
	// Skip only when a walk has begun since id was first asked about (so
	// it looked for id, and id was gone) and the last one is recent.
	if r.walks > gen && time.Since(r.lastWalk) < every {
		r.mu.Unlock()
		return Result{}
	}
	r.lastWalk = time.Now()
	r.walks++
	r.mu.Unlock()

	found := map[uint64]Result{}
	_ = filepath.WalkDir(r.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		ino, ok := inode(p)
		if !ok {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, r.Root), "/")
		found[ino] = Result{Path: rel, Attribution: ParsePath(rel), Found: true}
		return nil
	})
	for k, v := range found {
		r.store(k, v)
	}
	r.mu.Lock()
	for k := range found {
		delete(r.asked, k)
	}
	r.mu.Unlock()
	return found[id]
}

func inode(p string) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}
