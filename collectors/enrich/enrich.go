// Package enrich attributes a task to its container and pod on this node:
// pid → cgroup (collectors/cgroup) → container id → pod uid → pod metadata
// (collectors/metadata), and remembers each process's executable.
//
// Enrichment never drops an event: what could not be found is left empty,
// recorded in the task's Attribution, and counted in Gaps.
package enrich

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/collectors/cgroup"
	"github.com/weftobs/weft/collectors/metadata"
	"github.com/weftobs/weft/streams/schema"
)

// Gaps count events published with less than full attribution. Safe to
// read from any goroutine.
type Gaps struct {
	// UnknownCgroup: the cgroup path could not be parsed.
	UnknownCgroup atomic.Uint64
	// ProcessGone: the process (and its cgroup) were gone before
	// enrichment.
	ProcessGone atomic.Uint64
	// PodNotInMetadata: the pod uid is known from the cgroup, but the
	// metadata provider does not know the pod.
	PodNotInMetadata atomic.Uint64
}

// Enricher fills in tasks. Task, Exec and Exit are not safe for
// concurrent use: the collector's one reader goroutine owns them. Changed
// and Forget may be called from any goroutine (the metadata watcher's), and
// Gaps read from any.
type Enricher struct {
	Gaps Gaps

	cg   *cgroup.Resolver
	meta metadata.Provider
	// onPod announces a pod: the first time a pod known to the metadata
	// provider is seen in an event (again after Forget), and at once when
	// an announced pod changes (Changed). Calls are serialised by mu, on
	// the reader's hot path: onPod must not block (the collector's
	// publisher drops when full, publish.OverflowDrop).
	onPod func(*schema.Pod)

	byCgroup map[uint64]*cgEntry
	exes     map[uint32]string
	byPid    map[uint32]cgroup.Attribution
	procRoot string

	mu        sync.Mutex
	announced map[string]*schema.Pod // uid → the pod as last announced
}

type cgEntry struct {
	attr  cgroup.Attribution
	state cgState
	retry time.Time // when an unresolved entry may be tried again
}

type cgState uint8

const (
	resolved   cgState = iota
	root               // the v2 root: attribution is per process
	unresolved         // no cgroup has this id (any more)
)

// Bounds of the caches; past them a cache is cleared and rebuilt lazily.
const (
	maxExes    = 1 << 16
	maxCgroups = 1 << 16
)

// New returns an enricher. meta may be metadata.None{}; onPod may be nil.
func New(cg *cgroup.Resolver, meta metadata.Provider, onPod func(*schema.Pod)) *Enricher {
	if meta == nil {
		meta = metadata.None{}
	}
	return &Enricher{
		cg: cg, meta: meta, onPod: onPod,
		byCgroup: map[uint64]*cgEntry{}, exes: map[uint32]string{}, byPid: map[uint32]cgroup.Attribution{}, announced: map[string]*schema.Pod{},
		procRoot: "/proc",
	}
}

// Exec records pid's executable (from an exec event).
func (e *Enricher) Exec(pid uint32, exe string) {
	if len(e.exes) >= maxExes {
		clear(e.exes)
	}
	e.exes[pid] = exe
}

// Exit forgets pid.
func (e *Enricher) Exit(pid uint32) {
	delete(e.exes, pid)
	delete(e.byPid, pid)
}

// Forget makes the next event of pod uid announce it again (after the
// provider reported it deleted).
func (e *Enricher) Forget(uid string) {
	e.mu.Lock()
	delete(e.announced, uid)
	e.mu.Unlock()
}

// Changed announces pod p again at once when it was announced and p says
// something new about it: a container's name and image (the kubelet
// reports a container after its process started, so the first
// announcement of a pod whose first event is its container's first
// connection often lacks them), labels, addresses. A pod not announced yet
// is announced by its next event, as it stands then; one whose next event
// never comes (a client that called once and exited) is thus still named.
func (e *Enricher) Changed(p *schema.Pod) {
	e.mu.Lock()
	defer e.mu.Unlock()
	last := e.announced[p.GetUid()]
	if last == nil {
		return
	}
	if proto.Equal(last, p) {
		// Nothing new (the informer's resync, a status weft does not
		// carry): the pod's next event announces it again, so a pod
		// that runs for days is in EVENTS within its retention, for a
		// correlator's rebuild to find. The correlator takes the
		// repeat as no news.
		delete(e.announced, p.GetUid())
		return
	}
	e.announced[p.GetUid()] = p
	if e.onPod != nil {
		e.onPod(p)
	}
}

// Task fills t's exe, container id, pod uid and attribution from t.Pid and
// t.CgroupId, and returns the pod when the metadata provider knows it.
func (e *Enricher) Task(t *schema.Task) *schema.Pod {
	t.Exe = e.exe(t.Pid)
	a, ok := e.attribution(t.CgroupId, t.Pid)
	if !ok {
		t.ContainerId, t.PodUid = "", ""
		t.Attribution = schema.Attribution_ATTRIBUTION_PROCESS_GONE
		e.Gaps.ProcessGone.Add(1)
		return nil
	}
	t.ContainerId, t.PodUid = a.ContainerID, a.PodUID
	switch a.Kind {
	case cgroup.Host:
		t.Attribution = schema.Attribution_ATTRIBUTION_HOST
		return nil
	case cgroup.Container:
		t.Attribution = schema.Attribution_ATTRIBUTION_CONTAINER
		return nil
	case cgroup.Unknown:
		t.Attribution = schema.Attribution_ATTRIBUTION_UNKNOWN_CGROUP
		e.Gaps.UnknownCgroup.Add(1)
		return nil
	}
	pod, ok := e.meta.Pod(a.PodUID)
	if !ok {
		t.Attribution = schema.Attribution_ATTRIBUTION_POD_NOT_IN_METADATA
		e.Gaps.PodNotInMetadata.Add(1)
		return nil
	}
	t.Attribution = schema.Attribution_ATTRIBUTION_POD
	e.mu.Lock()
	if e.announced[a.PodUID] == nil {
		// Read again under the lock: a change the provider took after
		// the read above has either been seen by Changed (which found
		// the pod not announced and left it to this) or is in it.
		p, ok := e.meta.Pod(a.PodUID)
		if !ok {
			// Deleted meantime: its delete is announced, not it again.
			e.mu.Unlock()
			return pod
		}
		pod = p
		e.announced[a.PodUID] = pod
		if e.onPod != nil {
			e.onPod(pod)
		}
	}
	e.mu.Unlock()
	return pod
}

// attribution resolves a task's cgroup. The v2 id is the key where it
// says something; in the v2 root (v1-only and hybrid hosts) the answer is
// per process, from its v1 lines, cached by pid until its exit.
func (e *Enricher) attribution(id uint64, pid uint32) (cgroup.Attribution, bool) {
	ent, ok := e.byCgroup[id]
	if !ok || (ent.state == unresolved && time.Now().After(ent.retry)) {
		res := e.cg.Resolve(id, pid)
		if len(e.byCgroup) >= maxCgroups {
			clear(e.byCgroup)
		}
		ent = &cgEntry{attr: res.Attribution, state: resolved}
		switch {
		case !res.Found:
			ent.state, ent.retry = unresolved, time.Now().Add(time.Second)
		case res.Path == "/" || res.Path == "":
			ent.state = root
		}
		e.byCgroup[id] = ent
	}
	switch ent.state {
	case resolved:
		return ent.attr, true
	case root:
		if a, ok := e.byPid[pid]; ok {
			return a, true
		}
		a, ok := e.cg.ProcV1(pid)
		if !ok {
			// Gone, but its v2 cgroup is the root: a host process.
			a = cgroup.Attribution{Kind: cgroup.Host}
		}
		if len(e.byPid) >= maxExes {
			clear(e.byPid)
		}
		e.byPid[pid] = a
		return a, true
	}
	// The id matches no cgroup now: the last chance is the process itself.
	return e.cg.ProcV1(pid)
}

func (e *Enricher) exe(pid uint32) string {
	if exe, ok := e.exes[pid]; ok {
		return exe
	}
	exe, _ := os.Readlink(e.procRoot + "/" + strconv.FormatUint(uint64(pid), 10) + "/exe")
	if len(e.exes) >= maxExes {
		clear(e.exes)
	}
	e.exes[pid] = exe
	return exe
}
