// Package cgroup turns a process's cgroup into the container and pod it
// belongs to: parsing the cgroup path layouts of kubelet with containerd,
// CRI-O and Docker, cgroup v1 and v2 (ParsePath), and resolving the cgroup
// v2 id the kernel reports to a path (Resolver).
//
// It reads /proc and the cgroup filesystem only; it knows nothing of
// Kubernetes metadata or streams.
package cgroup

import (
	"regexp"
	"strings"
)

// Kind is what a cgroup path says about its processes.
type Kind int

const (
	// Host: a process outside any container (system.slice, user.slice, /).
	Host Kind = iota
	// Container: a container id, no pod (plain Docker, Podman).
	Container
	// Pod: a pod uid, and the container id when the process is in one.
	Pod
	// Unknown: a path in a container or pod hierarchy that could not be
	// parsed (garbage, an unknown runtime's layout).
	Unknown
)

func (k Kind) String() string {
	switch k {
	case Host:
		return "host"
	case Container:
		return "container"
	case Pod:
		return "pod"
	}
	return "unknown"
}

// Attribution is what ParsePath found.
type Attribution struct {
	Kind        Kind
	ContainerID string // 64 hex digits, without runtime prefix
	PodUID      string // canonical form, with dashes
}

// podUIDRe matches the pod segment of both drivers: cgroupfs
// "pod0a1b2c3d-…" and systemd "kubepods-burstable-pod0a1b2c3d_….slice".
var podUIDRe = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// runtimePrefixes are the scope prefixes of the systemd cgroup driver.
var runtimePrefixes = []string{"cri-containerd-", "crio-", "docker-", "containerd-", "libpod-"}

// ParsePath parses one cgroup path (the part after the hierarchy's mount
// point, as in /proc/<pid>/cgroup). Layouts understood, with any prefix
// before them (kind, nested kubelets, /kubelet.slice):
//
//	systemd driver: /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope
//	                (crio-<id>.scope, docker-<id>.scope)
//	cgroupfs:       /kubepods/burstable/pod<uid>/<id>, /kubepods/pod<uid>/<id>
//	containerd with systemd driver in cgroup_parent form: …/kubepods-…-pod<uid_>.slice:cri-containerd:<id>
//	plain Docker:   /docker/<id>, /system.slice/docker-<id>.scope
func ParsePath(path string) Attribution {
	path = strings.TrimSuffix(path, "/")
	inKube := strings.Contains(path, "kubepods")
	var pod string
	if m := podUIDRe.FindStringSubmatch(path); m != nil {
		pod = strings.ReplaceAll(m[1], "_", "-")
	}
	last := path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		last = path[i+1:]
	}
	id := containerID(last)
	switch {
	case pod != "":
		if id == "" && !strings.Contains(last, "pod") {
			// Below the pod but not a container we can parse.
			return Attribution{Kind: Unknown, PodUID: pod}
		}
		return Attribution{Kind: Pod, ContainerID: id, PodUID: pod}
	case inKube:
		return Attribution{Kind: Unknown, ContainerID: id}
	case id != "" && (strings.Contains(path, "docker") || strings.Contains(path, "libpod") || strings.Contains(path, "containerd") || strings.Contains(path, "crio")):
		return Attribution{Kind: Container, ContainerID: id}
	}
	return Attribution{Kind: Host}
}

// containerID extracts a container id from the last path segment, or "".
func containerID(seg string) string {
	seg = strings.TrimSuffix(seg, ".scope")
	if i := strings.LastIndexByte(seg, ':'); i >= 0 {
		// cgroup_parent form: <slice>:<runtime>:<id>
		seg = seg[i+1:]
	}
	for _, p := range runtimePrefixes {
		if rest, ok := strings.CutPrefix(seg, p); ok {
			seg = rest
			break
		}
	}
	if len(seg) != 64 || !isHex(seg) {
		return ""
	}
	return seg
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseProcCgroup parses the content of /proc/<pid>/cgroup and returns the
// cgroup v2 path ("" when the process has none, or it is the root on a
// v1-only host) and the attribution, from the v2 path when it says more
// than "host", else from the first v1 hierarchy that does.
func ParseProcCgroup(content string) (v2Path string, a Attribution) {
	a = Attribution{Kind: Host}
	var v1 []string
	for line := range strings.SplitSeq(content, "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path = parts[2]
			continue
		}
		v1 = append(v1, parts[2])
	}
	if v2Path != "" {
		if a = ParsePath(v2Path); a.Kind != Host {
			return v2Path, a
		}
	}
	for _, p := range v1 {
		if b := ParsePath(p); b.Kind != Host {
			return v2Path, b
		}
	}
	return v2Path, a
}
