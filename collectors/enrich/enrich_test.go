package enrich

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/collectors/cgroup"
	"github.com/weftobs/weft/streams/schema"
)

const (
	cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	pod = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
)

type pods map[string]*schema.Pod

func (p pods) Pod(uid string) (*schema.Pod, bool) { v, ok := p[uid]; return v, ok }

// fixture is a cgroup tree and a /proc with one process per case.
type fixture struct {
	root, proc string
	t          *testing.T
}

func (f fixture) cgroup(rel string) uint64 {
	dir := filepath.Join(f.root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(dir, &st)
	return st.Ino
}

func (f fixture) process(pid uint32, rel string) {
	d := filepath.Join(f.proc, strconv.Itoa(int(pid)))
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "cgroup"), []byte("0::"+rel+"\n"), 0o644)
}

// TestGaps: every event is published with what is known, and each kind
// of gap is counted.
func TestGaps(t *testing.T) {
	f := fixture{root: t.TempDir(), proc: t.TempDir(), t: t}
	podPath := "/kubepods.slice/kubepods-pod" + pod + ".slice/cri-containerd-" + cid + ".scope"
	ghostPath := "/kubepods.slice/kubepods-pod" + "aaaaaaaa-4d5e-4f60-8a9b-0c1d2e3f4a5b" + ".slice/cri-containerd-" + cid + ".scope"
	garbagePath := "/kubepods.slice/kubepods-pod" + pod + ".slice/%%garbage"
	hostPath := "/system.slice/sshd.service"
	idPod, idGhost, idGarbage, idHost := f.cgroup(podPath), f.cgroup(ghostPath), f.cgroup(garbagePath), f.cgroup(hostPath)
	f.process(10, podPath)
	f.process(11, ghostPath)
	f.process(12, garbagePath)
	f.process(13, hostPath)
	// pid 14 exited before enrichment, but its cgroup is still there.
	// pid 15 exited and its cgroup was removed.

	var announced []string
	var last *schema.Pod
	meta := pods{pod: {Uid: pod, Name: "app", Namespace: "shop"}}
	e := New(&cgroup.Resolver{Root: f.root, Proc: f.proc}, meta, func(p *schema.Pod) { announced, last = append(announced, p.Name), p })

	tests := []struct {
		name       string
		pid        uint32
		cg         uint64
		want       schema.Attribution
		wantPod    string
		wantCont   string
		wantPodRet bool
	}{
		{"pod", 10, idPod, schema.Attribution_ATTRIBUTION_POD, pod, cid, true},
		{"pod again", 10, idPod, schema.Attribution_ATTRIBUTION_POD, pod, cid, true},
		{"pod missing from metadata", 11, idGhost, schema.Attribution_ATTRIBUTION_POD_NOT_IN_METADATA, "aaaaaaaa-4d5e-4f60-8a9b-0c1d2e3f4a5b", cid, false},
		{"garbage cgroup path", 12, idGarbage, schema.Attribution_ATTRIBUTION_UNKNOWN_CGROUP, pod, "", false},
		{"host", 13, idHost, schema.Attribution_ATTRIBUTION_HOST, "", "", false},
		{"exited, cgroup remains", 14, idPod, schema.Attribution_ATTRIBUTION_POD, pod, cid, true},
		{"exited, cgroup gone", 15, idPod + 1_000_000, schema.Attribution_ATTRIBUTION_PROCESS_GONE, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := &schema.Task{Pid: tt.pid, CgroupId: tt.cg}
			p := e.Task(task)
			if task.Attribution != tt.want || task.PodUid != tt.wantPod || task.ContainerId != tt.wantCont || (p != nil) != tt.wantPodRet {
				t.Errorf("Task = %v pod %q container %q (pod returned %v), want %v %q %q", task.Attribution, task.PodUid, task.ContainerId, p != nil, tt.want, tt.wantPod, tt.wantCont)
			}
		})
	}
	if g := e.Gaps.PodNotInMetadata.Load(); g != 1 {
		t.Errorf("PodNotInMetadata = %d, want 1", g)
	}
	if g := e.Gaps.UnknownCgroup.Load(); g != 1 {
		t.Errorf("UnknownCgroup = %d, want 1", g)
	}
	if g := e.Gaps.ProcessGone.Load(); g != 1 {
		t.Errorf("ProcessGone = %d, want 1", g)
	}
	if len(announced) != 1 || announced[0] != "app" {
		t.Errorf("announced %v, want [app] once", announced)
	}
	e.Forget(pod)
	e.Task(&schema.Task{Pid: 10, CgroupId: idPod})
	if len(announced) != 2 {
		t.Errorf("after Forget: announced %v, want app twice", announced)
	}

	// The provider reports changes (its store already has the pod as it
	// reports it): an announced pod that changed is announced again at
	// once, as it now is; one that did not change is announced again by
	// its next event (the informer's resync keeps pods in EVENTS); one
	// never announced is not; one deleted is not announced by its next
	// event.
	task := func() { e.Task(&schema.Task{Pid: 10, CgroupId: idPod}) }
	named := &schema.Pod{Uid: pod, Name: "app", Namespace: "shop", Containers: []*schema.Container{{Id: cid, Name: "app", Image: "example/app:1"}}}
	for _, tc := range []struct {
		name string
		do   func()
		want int // announcements so far
	}{
		{"nothing new", func() { e.Changed(proto.Clone(meta[pod]).(*schema.Pod)) }, 2},
		{"its next event", task, 3},
		{"its container named", func() { meta[pod] = named; e.Changed(named) }, 4},
		{"another event", task, 4},
		{"the same again", func() { e.Changed(proto.Clone(named).(*schema.Pod)) }, 4},
		{"its next event after the resync", task, 5},
		{"a pod never announced", func() { e.Changed(&schema.Pod{Uid: "bbbbbbbb-4d5e-4f60-8a9b-0c1d2e3f4a5b", Name: "other"}) }, 5},
		{"deleted, then an event of its last process", func() { delete(meta, pod); e.Forget(pod); task() }, 5},
	} {
		tc.do()
		if len(announced) != tc.want {
			t.Errorf("%s: announced %d times, want %d", tc.name, len(announced), tc.want)
		}
	}
	if !proto.Equal(last, named) {
		t.Errorf("last announced %v, want %v", last, named)
	}
}
