package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ForTest starts a cluster for a test (see Start) and tears it down when
// the test ends. It fails the test if the cluster cannot start; without
// root it skips, except in CI (CI=true), which runs as root. On failure the logs stay in the
// cluster's LogDir and the test says where.
func ForTest(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Log == nil {
		o.Log = func(format string, args ...any) { t.Logf("cluster: "+format, args...) }
	}
	// Bounded: a cold build is some 10 minutes on two cores, a start
	// well under one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("testenv/cluster needs root, and CI runs as root")
		}
		t.Skip("testenv/cluster needs root (it runs containerd and the kubelet)")
	}
	var missing []string
	for _, tool := range []string{"etcd", "containerd", "runc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testenv/cluster needs %v (Debian: etcd-server containerd runc containernetworking-plugins nftables; .ci/run installs them)", missing)
		}
		t.Skipf("skipped: testenv/cluster needs %v (Debian: etcd-server containerd runc containernetworking-plugins nftables; .ci/run installs them)", missing)
	}
	c, err := Start(ctx, o)
	if err != nil {
		// The next cluster in the same Dir removes these logs: say the
		// ends of the node's and keep them all beside Dir.
		dir := o.Dir
		if dir == "" {
			dir = DefaultDir
		}
		logs := filepath.Join(dir, "logs")
		for _, name := range []string{"kubelet", "containerd", "kube-apiserver", "kube-controller-manager"} {
			if b, err := os.ReadFile(filepath.Join(logs, name+".log")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("the end of %s.log:\n%s", name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
		kept := dir + "-failed-logs"
		_ = os.RemoveAll(kept)
		if err := os.CopyFS(kept, os.DirFS(logs)); err == nil {
			t.Logf("the cluster's logs are kept in %s", kept)
		}
		t.Fatalf("start a cluster: %v", err)
	}
	t.Logf("cluster up: build %s, start %s; KUBECONFIG=%s", c.BuildTime.Round(time.Second), c.StartTime.Round(time.Second), c.Kubeconfig)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs kept in %s", c.LogDir())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("tear the cluster down: %v", err)
		}
	})
	return c
}
