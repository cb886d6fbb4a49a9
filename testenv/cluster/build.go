package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Versions the cluster is built from: Kubernetes from its Go module (the
// staging modules at the matching v0.MINOR.PATCH), CoreDNS from its own.
const (
	KubernetesVersion = "v1.34.4"
	CoreDNSVersion    = "v1.14.7"
)

// Commands are the Kubernetes binaries Build makes.
var Commands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// Binaries is where the built binaries are.
type Binaries struct {
	// Dir holds one file per name in Commands, and coredns.
	Dir string
}

// Path is the path of one binary.
func (b Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// CacheDir is where builds are kept: $WEFT_CACHE_DIR/k8s, else the user's
// cache dir (~/.cache/weft/k8s).
func CacheDir() (string, error) {
	if d := os.Getenv("WEFT_CACHE_DIR"); d != "" {
		return filepath.Join(d, "k8s"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory: %w", err)
	}
	return filepath.Join(d, "weft", "k8s"), nil
}

// Build makes the Kubernetes binaries of KubernetesVersion and CoreDNS of
// CoreDNSVersion, static (CGO_ENABLED=0), once: a later call finds them in
// the cache dir and returns at once. Kubernetes is built from
// k8s.io/kubernetes in a throwaway module that replaces each of its
// staging modules (which its own go.mod points at ./staging) with the
// published v0.MINOR.PATCH. Everything comes from the Go module proxy; a
// cold build takes some 10 minutes on two cores, the Go build cache makes
// a rebuild short.
func Build(ctx context.Context) (Binaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Dir: filepath.Join(cache, KubernetesVersion, "bin")}
	if built(b) {
		return b, nil
	}
	mod := filepath.Join(cache, KubernetesVersion, "mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return b, err
	}
	gomod, err := kubernetesGoMod(ctx, mod)
	if err != nil {
		return b, err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), gomod, 0o644); err != nil {
		return b, err
	}
	if err := os.WriteFile(filepath.Join(mod, "doc.go"), []byte("// Package k8sbuild only builds Kubernetes' commands (weft testenv/cluster).\npackage k8sbuild\n"), 0o644); err != nil {
		return b, err
	}
	tmp := b.Dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return b, err
	}
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	// The version the binaries report (and Helm checks a chart's
	// kubeVersion against); without it they say v0.0.0-master.
	ldflags := ""
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ldflags += fmt.Sprintf(" -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean",
			pkg, KubernetesVersion, pkg, minor[0], pkg, minor[1], pkg)
	}
	args := []string{"build", "-o", tmp + "/", "-ldflags", strings.TrimSpace(ldflags)}
	for _, c := range Commands {
		args = append(args, "k8s.io/kubernetes/cmd/"+c)
	}
	if err := goCmd(ctx, mod, []string{"GOFLAGS=-mod=mod"}, args...); err != nil {
		return b, fmt.Errorf("build kubernetes %s: %w", KubernetesVersion, err)
	}
	if err := goCmd(ctx, mod, []string{"GOBIN=" + tmp}, "install", "github.com/coredns/coredns@"+CoreDNSVersion); err != nil {
		return b, fmt.Errorf("build coredns %s: %w", CoreDNSVersion, err)
	}
	_ = os.RemoveAll(b.Dir)
	if err := os.Rename(tmp, b.Dir); err != nil {
		return b, err
	}
	return b, nil
}

func built(b Binaries) bool {
	for _, c := range append(Commands, "coredns") {
		if fi, err := os.Stat(b.Path(c)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// kubernetesGoMod writes the throwaway module's go.mod: it requires
// k8s.io/kubernetes and replaces every module that Kubernetes' own go.mod
// replaces with a ./staging directory by its published version.
func kubernetesGoMod(ctx context.Context, dir string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "k8s.io/kubernetes@"+KubernetesVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("download k8s.io/kubernetes@%s: %w", KubernetesVersion, err)
	}
	var dl struct{ GoMod, Error string }
	if err := json.Unmarshal(out.Bytes(), &dl); err != nil || dl.Error != "" {
		return nil, fmt.Errorf("download k8s.io/kubernetes@%s: %v %s", KubernetesVersion, err, dl.Error)
	}
	f, err := os.Open(dl.GoMod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	staging := "v0." + strings.SplitN(strings.TrimPrefix(KubernetesVersion, "v1."), "-", 2)[0]
	var g bytes.Buffer
	fmt.Fprintf(&g, "module weft.local/k8sbuild\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", KubernetesVersion)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "\tk8s.io/api => ./staging/src/k8s.io/api"
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "./staging/") {
			fmt.Fprintf(&g, "\t%s => %s %s\n", fields[0], fields[0], staging)
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no staging modules replaced; the layout of Kubernetes' go.mod changed", dl.GoMod)
	}
	g.WriteString(")\n")
	return g.Bytes(), nil
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off"), env...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	return cmd.Run()
}
