// Package node builds a simulated Kubernetes node on this machine for
// tests: pods as network namespaces (a veth each to one bridge, an IP
// each) and cgroup v2 directories laid out as kubelet lays them out with
// the systemd driver and containerd
// (kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope),
// processes started inside them, and the metadata file that describes
// them (collectors/metadata's file format).
//
// It needs root, `ip` (iproute2) and a cgroup v2 mount; New skips the test
// with the reason otherwise. Everything it creates is removed in
// t.Cleanup.
package node

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/weftobs/weft/collectors/cgroup"
	"github.com/weftobs/weft/collectors/metadata"
)

// Node is a simulated node.
type Node struct {
	Name string
	// IP is the node's address on the pod bridge (host network).
	IP string
	// CgroupRoot is this node's directory in the cgroup v2 hierarchy; the
	// kubepods tree is below it, as on a kind node.
	CgroupRoot string

	id     string
	bridge string
	subnet int
	t      testing.TB

	mu   sync.Mutex
	pods []*Pod
	next int
}

// Pod is a simulated pod.
type Pod struct {
	UID, Name, Namespace string
	// IP is the pod's address; the node's IP for a host-network pod.
	IP          string
	HostNetwork bool
	// NetNS is the network namespace name ("" for host network).
	NetNS      string
	Labels     map[string]string
	Containers []*Container
	// Controller is the kind of the pod's top controller in its metadata:
	// "" is a Deployment's pod (owned by its ReplicaSet), "DaemonSet" or
	// "StatefulSet" own their pods directly, "Pod" is a bare pod.
	Controller string
	dir        string
}

// Container is a container of a pod: a cgroup directory.
type Container struct {
	ID, Name string
	Dir      string
	Pod      *Pod
}

// New creates a node: a bridge with the node's IP and a cgroup root.
func New(t testing.TB, name string) *Node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the simulated node needs root (network namespaces, cgroups)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the simulated node needs iproute2's ip")
	}
	v2 := cgroup.FindV2Mount("/proc/self/mountinfo")
	if v2 == "" {
		t.Skip("skipping: the simulated node needs a cgroup v2 mount")
	}
	id := randHex(3)
	n := &Node{Name: name, id: id, bridge: "weftbr" + id, t: t, subnet: 100 + int(id[0])%100}
	n.IP = fmt.Sprintf("10.%d.%d.1", n.subnet, int(id[1])%200)
	n.CgroupRoot = filepath.Join(v2, "weft-"+id+".slice")
	t.Cleanup(n.cleanup)
	n.must("ip", "link", "add", n.bridge, "type", "bridge")
	n.must("ip", "addr", "add", n.IP+"/24", "dev", n.bridge)
	n.must("ip", "link", "set", n.bridge, "up")
	if err := os.MkdirAll(filepath.Join(n.CgroupRoot, "kubepods.slice", "kubepods-besteffort.slice"), 0o755); err != nil {
		t.Fatalf("cgroup root: %v", err)
	}
	return n
}

func (n *Node) must(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// AddPod creates a pod with one container per name; hostNetwork pods share
// the node's network (the DaemonSet pattern).
func (n *Node) AddPod(name, namespace string, hostNetwork bool, containers ...string) *Pod {
	n.t.Helper()
	n.mu.Lock()
	n.next++
	i := n.next
	n.mu.Unlock()
	p := &Pod{UID: uuid(), Name: name, Namespace: namespace, HostNetwork: hostNetwork, Labels: map[string]string{"app": name}}
	if hostNetwork {
		p.IP = n.IP
	} else {
		p.NetNS = fmt.Sprintf("weft-%s-%d", n.id, i)
		p.IP = fmt.Sprintf("%s.%d", n.IP[:strings.LastIndexByte(n.IP, '.')], 10+i)
		veth := fmt.Sprintf("wv%s%d", n.id, i)
		n.must("ip", "netns", "add", p.NetNS)
		n.must("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.NetNS)
		n.must("ip", "link", "set", veth, "master", n.bridge, "up")
		n.must("ip", "-n", p.NetNS, "addr", "add", p.IP+"/24", "dev", "eth0")
		n.must("ip", "-n", p.NetNS, "link", "set", "eth0", "up")
		n.must("ip", "-n", p.NetNS, "link", "set", "lo", "up")
		n.must("ip", "-n", p.NetNS, "route", "add", "default", "via", n.IP)
	}
	p.dir = filepath.Join(n.CgroupRoot, "kubepods.slice", "kubepods-besteffort.slice",
		"kubepods-besteffort-pod"+strings.ReplaceAll(p.UID, "-", "_")+".slice")
	for _, cn := range containers {
		c := &Container{ID: randHex(32), Name: cn, Pod: p}
		c.Dir = filepath.Join(p.dir, "cri-containerd-"+c.ID+".scope")
		if err := os.MkdirAll(c.Dir, 0o755); err != nil {
			n.t.Fatalf("container cgroup: %v", err)
		}
		p.Containers = append(p.Containers, c)
	}
	n.mu.Lock()
	n.pods = append(n.pods, p)
	n.mu.Unlock()
	return p
}

// Container returns the pod's container named name.
func (p *Pod) Container(name string) *Container {
	for _, c := range p.Containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Command returns a command that runs in the container: started directly
// in its cgroup (clone3 CLONE_INTO_CGROUP, so no event escapes it) and in
// the pod's network namespace (`ip netns exec` execs in place: the pid is
// the command's).
func (c *Container) Command(name string, args ...string) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	if c.Pod.NetNS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", c.Pod.NetNS, name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	fd, err := syscall.Open(c.Dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.Dir, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	// The fd must outlive Start; closing it after is the caller's
	// business only through Release.
	cgroupFDs.Store(cmd, fd)
	return cmd, nil
}

var cgroupFDs sync.Map

// Release closes what Command opened for cmd; call it after cmd.Start.
func Release(cmd *exec.Cmd) {
	if fd, ok := cgroupFDs.LoadAndDelete(cmd); ok {
		syscall.Close(fd.(int))
	}
}

// Pods returns the node's pods.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

// Metadata describes the node's pods, leaving out those in omit (to
// simulate a pod the metadata provider does not know).
func (n *Node) Metadata(omit ...*Pod) *metadata.File {
	f := &metadata.File{Node: n.Name}
outer:
	for _, p := range n.Pods() {
		for _, o := range omit {
			if o == p {
				continue outer
			}
		}
		fp := metadata.FilePod{UID: p.UID, Name: p.Name, Namespace: p.Namespace, IPs: []string{p.IP},
			HostNetwork: p.HostNetwork, Labels: p.Labels}
		switch p.Controller {
		case "":
			// As on a cluster: a Deployment's pod is owned by its
			// ReplicaSet, and the provider resolves the Deployment.
			fp.Owners = []metadata.FileOwner{{Kind: "ReplicaSet", Name: p.Name + "-5d8f7c9b4", UID: "rs-" + p.UID, Controller: true}}
			fp.Workload = &metadata.FileOwner{Kind: "Deployment", Name: p.Name, UID: "deploy-" + p.UID}
		case "Pod":
		default:
			fp.Owners = []metadata.FileOwner{{Kind: p.Controller, Name: p.Name, UID: "owner-" + p.UID, Controller: true}}
		}
		for _, c := range p.Containers {
			fp.Containers = append(fp.Containers, metadata.FileContainer{ID: c.ID, Name: c.Name, Image: "weft/testenv:" + c.Name})
		}
		f.Pods = append(f.Pods, fp)
	}
	return f
}

// WriteMetadata writes Metadata(omit...) to a file in dir and returns its
// path.
func (n *Node) WriteMetadata(dir string, omit ...*Pod) string {
	n.t.Helper()
	b, err := yaml.Marshal(n.Metadata(omit...))
	if err != nil {
		n.t.Fatal(err)
	}
	path := filepath.Join(dir, "metadata.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		n.t.Fatal(err)
	}
	return path
}

func (n *Node) cleanup() {
	for _, p := range n.Pods() {
		for _, c := range p.Containers {
			killCgroup(c.Dir)
			os.Remove(c.Dir)
		}
		os.Remove(p.dir)
		if p.NetNS != "" {
			exec.Command("ip", "netns", "del", p.NetNS).Run()
		}
	}
	os.Remove(filepath.Join(n.CgroupRoot, "kubepods.slice", "kubepods-besteffort.slice"))
	os.Remove(filepath.Join(n.CgroupRoot, "kubepods.slice"))
	os.Remove(n.CgroupRoot)
	exec.Command("ip", "link", "del", n.bridge).Run()
}

// killCgroup kills what is left in a cgroup (cgroup.kill where the kernel
// has it).
func killCgroup(dir string) {
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		var pid int
		fmt.Sscan(f, &pid)
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uuid() string {
	h := randHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
