package cgroup

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

const (
	cid  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	pod  = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
	pod_ = "6f1c2a3b_4d5e_4f60_8a9b_0c1d2e3f4a5b"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, path string
		want       Attribution
	}{
		{"containerd systemd v2", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + pod_ + ".slice/cri-containerd-" + cid + ".scope",
			Attribution{Pod, cid, pod}},
		{"crio systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + pod_ + ".slice/crio-" + cid + ".scope",
			Attribution{Pod, cid, pod}},
		{"docker systemd (cri-dockerd)", "/kubepods.slice/kubepods-pod" + pod_ + ".slice/docker-" + cid + ".scope",
			Attribution{Pod, cid, pod}},
		{"cgroupfs v1 burstable", "/kubepods/burstable/pod" + pod + "/" + cid, Attribution{Pod, cid, pod}},
		{"cgroupfs guaranteed", "/kubepods/pod" + pod + "/" + cid, Attribution{Pod, cid, pod}},
		{"kind node prefix", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + pod_ + ".slice/cri-containerd-" + cid + ".scope",
			Attribution{Pod, cid, pod}},
		{"containerd cgroup_parent form", "/system.slice/containerd.service/kubepods-burstable-pod" + pod_ + ".slice:cri-containerd:" + cid,
			Attribution{Pod, cid, pod}},
		{"testenv prefix", "/weft-abc.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + pod_ + ".slice/cri-containerd-" + cid + ".scope",
			Attribution{Pod, cid, pod}},
		{"pod cgroup itself", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + pod_ + ".slice", Attribution{Pod, "", pod}},
		{"crio conmon", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + pod_ + ".slice/crio-conmon-" + cid + ".scope",
			Attribution{Unknown, "", pod}},
		{"garbage below pod", "/kubepods/burstable/pod" + pod + "/not-a-container", Attribution{Unknown, "", pod}},
		{"garbage in kubepods", "/kubepods.slice/%%%garbage", Attribution{Kind: Unknown}},
		{"kubepods short id", "/kubepods/burstable/podnot-a-uid/abc", Attribution{Kind: Unknown}},
		{"plain docker v1", "/docker/" + cid, Attribution{Container, cid, ""}},
		{"plain docker systemd", "/system.slice/docker-" + cid + ".scope", Attribution{Container, cid, ""}},
		{"podman", "/machine.slice/libpod-" + cid + ".scope", Attribution{Container, cid, ""}},
		{"host service", "/system.slice/sshd.service", Attribution{Kind: Host}},
		{"host user", "/user.slice/user-1000.slice/session-3.scope", Attribution{Kind: Host}},
		{"root", "/", Attribution{Kind: Host}},
		{"empty", "", Attribution{Kind: Host}},
		{"hex but no runtime", "/process_api/" + cid, Attribution{Kind: Host}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParsePath(tt.path); got != tt.want {
				t.Errorf("ParsePath(%q) = %+v, want %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name, content string
		wantV2        string
		want          Attribution
	}{
		{"v2 only", "0::/kubepods.slice/kubepods-pod" + pod_ + ".slice/cri-containerd-" + cid + ".scope\n",
			"/kubepods.slice/kubepods-pod" + pod_ + ".slice/cri-containerd-" + cid + ".scope", Attribution{Pod, cid, pod}},
		{"v1 only", "12:memory:/kubepods/burstable/pod" + pod + "/" + cid + "\n11:cpu,cpuacct:/kubepods/burstable/pod" + pod + "/" + cid + "\n",
			"", Attribution{Pod, cid, pod}},
		{"hybrid, v2 root", "4:memory:/docker/" + cid + "\n0::/\n", "/", Attribution{Container, cid, ""}},
		{"host", "0::/system.slice/cron.service\n", "/system.slice/cron.service", Attribution{Kind: Host}},
		{"garbage lines", "nonsense\n::\n", "", Attribution{Kind: Host}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v2, got := ParseProcCgroup(tt.content)
			if v2 != tt.wantV2 || got != tt.want {
				t.Errorf("ParseProcCgroup = %q %+v, want %q %+v", v2, got, tt.wantV2, tt.want)
			}
		})
	}
}

func TestFindV2Mount(t *testing.T) {
	dir := t.TempDir()
	mi := filepath.Join(dir, "mountinfo")
	os.WriteFile(mi, []byte(
		"35 24 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"+
			"36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"), 0o644)
	if got := FindV2Mount(mi); got != "/sys/fs/cgroup/unified" {
		t.Errorf("FindV2Mount = %q", got)
	}
}

// TestResolverProcessGone: the id of a cgroup that still exists resolves
// by walking the tree after its process exited; an id that matches
// nothing is not found.
func TestResolverProcessGone(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "kubepods.slice", "kubepods-pod"+pod_+".slice", "cri-containerd-"+cid+".scope")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Root: root, Proc: t.TempDir()} // an empty /proc: every process is gone
	res := r.Resolve(st.Ino, 4242)
	if !res.Found || res.Attribution != (Attribution{Pod, cid, pod}) {
		t.Errorf("Resolve after exit = %+v", res)
	}
	if res := r.Resolve(st.Ino+1_000_000, 4243); res.Found {
		t.Errorf("Resolve of an unknown id = %+v, want not found", res)
	}
}

// TestResolverProc: the fast path reads /proc/<pid>/cgroup and checks the
// id against the directory's inode (a process that moved is not trusted).
func TestResolverProc(t *testing.T) {
	root := t.TempDir()
	rel := "/kubepods/pod" + pod + "/" + cid
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(root, rel), &st)
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "77"), 0o755)
	os.WriteFile(filepath.Join(proc, "77", "cgroup"), []byte("0::"+rel+"\n"), 0o644)
	r := &Resolver{Root: root, Proc: proc}
	if res := r.fromProc(st.Ino, 77); !res.Found || res.Path != rel || res.PodUID != pod {
		t.Errorf("fromProc = %+v", res)
	}
	if res := r.fromProc(st.Ino+1, 77); res.Found {
		t.Errorf("fromProc with a wrong id = %+v, want not found", res)
	}
}
