package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// state is what Down needs to undo a cluster, kept in Dir/state.json and
// written before each step that makes something.
type state struct {
	Dir             string            `json:"dir"`
	Procs           []proc            `json:"procs"`
	Sysctls         map[string]string `json:"sysctls"`
	NftTablesBefore []string          `json:"nftTablesBefore"`
	NetnsBefore     []string          `json:"netnsBefore"`
	Uplink          string            `json:"uplink"`
	// Made are the paths outside Dir that containerd, runc, the CNI
	// plugins and the kubelet write to and that did not exist before the
	// cluster: Down removes them.
	Made []string `json:"made"`
	// Mounted are the filesystems Start mounted outside Dir (bpffs,
	// tracefs), unmounted by Down.
	Mounted []string `json:"mounted"`
}

type proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Start is the process's start time (clock ticks since boot), so a
	// PID reused by another process is never signalled.
	Start uint64 `json:"start"`
}

func (s *state) path() string { return filepath.Join(s.Dir, "state.json") }

func (s *state) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path())
}

func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

func (p proc) alive() bool {
	st := procStart(p.PID)
	if st == 0 || st != p.Start {
		return false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}

// stop sends SIGTERM to the process's group, then SIGKILL after grace.
func (p proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for p.alive() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if p.alive() {
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		for i := 0; p.alive() && i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Down tears down the cluster whose state is in dir, whatever state it is
// in (running, half started, crashed): the kubelet first so it restarts
// nothing, then every pod process and container shim, then the other
// components by their recorded PIDs, the mounts under dir and the pods'
// network namespaces, the kubelet's cgroups, the interfaces, the nftables
// tables, and last the sysctls and bpffs/tracefs. It keeps dir (and the
// logs in it). Down of a dir without a state file does nothing.
func Down(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	st.Dir = dir
	var errs []error
	byName := map[string]proc{}
	for _, p := range st.Procs {
		byName[p.Name] = p
	}
	if p, ok := byName["kubelet"]; ok {
		p.stop(10 * time.Second)
	}
	killPods(dir)
	for i := len(st.Procs) - 1; i >= 0; i-- {
		st.Procs[i].stop(10 * time.Second)
	}
	for _, p := range st.Procs {
		if p.alive() {
			errs = append(errs, fmt.Errorf("%s (pid %d) is still running", p.Name, p.PID))
		}
	}
	errs = append(errs, unmountUnder(dir))
	for _, n := range listDir("/run/netns") {
		if strings.HasPrefix(n, "cni-") && !slices.Contains(st.NetnsBefore, n) {
			p := filepath.Join("/run/netns", n)
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, removeCgroups())
	// The kubelet's links to container logs (in a fixed directory).
	for _, n := range listDir("/var/log/containers") {
		p := filepath.Join("/var/log/containers", n)
		if dst, err := os.Readlink(p); err == nil && strings.HasPrefix(dst, dir+"/") {
			_ = os.Remove(p)
		}
	}
	for _, p := range st.Made {
		_ = unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []string{Bridge} {
		if _, err := os.Stat(filepath.Join("/sys/class/net", l)); err == nil {
			if out, err := exec.Command("ip", "link", "del", l).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", l, err, out))
			}
		}
	}
	errs = append(errs, cleanNft(st.NftTablesBefore))
	for k, v := range st.Sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	for _, m := range st.Mounted {
		if err := syscall.Unmount(m, 0); err != nil && mounted(m) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(st.path())
}

// killPods kills every process in the kubelet's pod cgroups and every
// container shim of this cluster's containerd (found by its socket
// argument), by PID.
func killPods(dir string) {
	sock := filepath.Join(dir, "containerd", "containerd.sock")
	for round := 0; round < 20; round++ {
		var pids []int
		for _, root := range cgroupRoots() {
			_ = filepath.WalkDir(filepath.Join(root, "kubepods"), func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
					return nil
				}
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
				return nil
			})
		}
		for _, e := range listDir("/proc") {
			pid, err := strconv.Atoi(e)
			if err != nil {
				continue
			}
			cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			args := strings.Split(string(cl), "\x00")
			if len(args) > 0 && strings.HasSuffix(args[0], "containerd-shim-runc-v2") && slices.Contains(args, sock) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cgroupRoots are the mounted cgroup hierarchies (v1 controllers and the
// v2 unified one).
func cgroupRoots() []string {
	var roots []string
	for _, e := range listDir("/sys/fs/cgroup") {
		p := filepath.Join("/sys/fs/cgroup", e)
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			roots = append(roots, p)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		roots = append(roots, "/sys/fs/cgroup")
	}
	return roots
}

// removeCgroups removes the kubelet's kubepods trees, deepest first.
func removeCgroups() error {
	var errs []error
	for _, root := range cgroupRoots() {
		top := filepath.Join(root, "kubepods")
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts everything mounted under dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var targets []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			t := unescapeMount(f[4])
			if t == dir || strings.HasPrefix(t, dir+"/") {
				targets = append(targets, t)
			}
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := syscall.Unmount(t, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// cleanNft deletes the nftables tables that were not there before the
// cluster (its firewall, kube-proxy's, and the iptables tables the
// kubelet made), and the kubelet's KUBE-* chains in tables that were.
func cleanNft(before []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now, err := nftTables(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range now {
		if slices.Contains(before, t) {
			out, _ := exec.CommandContext(ctx, "nft", "list", "table", strings.Fields(t)[0], strings.Fields(t)[1]).Output()
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "chain" && strings.HasPrefix(f[1], "KUBE-") {
					fam, name := strings.Fields(t)[0], strings.Fields(t)[1]
					_ = exec.CommandContext(ctx, "nft", "flush", "chain", fam, name, f[1]).Run()
					_ = exec.CommandContext(ctx, "nft", "delete", "chain", fam, name, f[1]).Run()
				}
			}
			continue
		}
		f := strings.Fields(t)
		if out, err := exec.CommandContext(ctx, "nft", "delete", "table", f[0], f[1]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s: %v: %s", t, err, out))
		}
	}
	return errors.Join(errs...)
}
