package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/weftobs/weft/charts/image"
	"github.com/weftobs/weft/charts/render"
	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/testenv/cluster"
)

// TestWeftOnKubernetes installs charts/weft with the Helm SDK on a real
// cluster, as a user of a one-node cluster would (the default layout,
// nats.replicas=1 with JetStream in an emptyDir), in a namespace labelled
// as the chart's README says, with weft's own image (charts/image) and
// NATS built from the nats-server module weft depends on; every pod must
// become Ready, the collector unprivileged with only the chart's
// capabilities. Then the test workloads run (see runWorkloads), each
// logging what it did, and the graph the chart serves must be exactly
// their ground truth.
func TestWeftOnKubernetes(t *testing.T) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	ch, err := image.ChartDefaults()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "weft")
	if err := image.BuildBinary(bin, ch.AppVersion, "amd64"); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(tmp, "image")
	if _, err := image.Write(layout, image.Options{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	bins := map[string]string{"nats-server": "github.com/nats-io/nats-server/v2", "weft-workload": "github.com/weftobs/weft/testenv/workload/cmd/weft-workload"}
	for name, pkg := range bins {
		b := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, name), pkg)
		b.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := b.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	t.Logf("images built in %s", time.Since(t0).Round(time.Second))
	c := cluster.ForTest(t, cluster.Options{Dir: filepath.Join(os.TempDir(), "weft-cluster-test"), Images: map[string]string{layout: ch.Reference()}})
	const natsImage = "weft.local/nats:test"
	if err := c.LoadBinaryImage(ctx, natsImage, filepath.Join(tmp, "nats-server")); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadBinaryImage(ctx, workloadImage, filepath.Join(tmp, "weft-workload")); err != nil {
		t.Fatal(err)
	}

	const ns = "weft"
	_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "privileged",
		"pod-security.kubernetes.io/warn":    "restricted",
		"pod-security.kubernetes.io/audit":   "restricted",
	}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What the chart's README gives for one node with no storage
	// provisioner, and images that come from no registry.
	values := map[string]any{
		"image": map[string]any{"pullPolicy": "Never"},
		"nats": map[string]any{
			"replicas": 1,
			"image":    map[string]any{"repository": "weft.local/nats", "tag": "test", "pullPolicy": "Never"},
			"storage":  map[string]any{"emptyDir": true},
		},
	}
	kubeconfig, namespace := c.Kubeconfig, ns
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &namespace
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, ns, "secret", func(f string, a ...any) { t.Logf("helm: "+f, a...) }); err != nil {
		t.Fatal(err)
	}
	chrt, err := render.Chart()
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = "weft", ns
	inst.Timeout = 5 * time.Minute
	t1 := time.Now()
	if _, err := inst.RunWithContext(ctx, chrt, values); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	waitPodsReady(ctx, t, c, ns, 6*time.Minute)
	t.Logf("every weft pod Ready %s after helm install", time.Since(t1).Round(time.Second))
	// A fresh install starts without a crash: every stage waits for what
	// it needs (NATS, its streams) instead of exiting.
	if pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range pods.Items {
			for _, st := range p.Status.ContainerStatuses {
				if st.RestartCount > 0 {
					prev, _ := c.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: st.Name, Previous: true}).DoRaw(ctx)
					t.Errorf("fresh install: %s/%s restarted %d times; its previous run's log:\n%s", p.Name, st.Name, st.RestartCount, prev)
				}
			}
		}
	}

	// The collector: not privileged, exactly the chart's capabilities.
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sawCollector := false
	for _, p := range pods.Items {
		for _, ct := range p.Spec.Containers {
			if ct.Name != "collector" {
				continue
			}
			sawCollector = true
			sc := ct.SecurityContext
			if sc == nil || (sc.Privileged != nil && *sc.Privileged) {
				t.Errorf("collector %s is privileged or has no security context", p.Name)
				continue
			}
			var caps []string
			if sc.Capabilities != nil {
				for _, c := range sc.Capabilities.Add {
					caps = append(caps, string(c))
				}
			}
			slices.Sort(caps)
			if want := []string{"BPF", "PERFMON"}; !slices.Equal(caps, want) {
				t.Errorf("collector %s adds capabilities %v, want the chart's %v", p.Name, caps, want)
			}
		}
	}
	if !sawCollector {
		t.Fatal("no collector container in the release")
	}
	checkPodSecurity(ctx, t, c, ns)

	t2 := time.Now()
	u0 := snapshot(ctx, t, c, ns)
	tr := runWorkloads(ctx, t, c)
	t.Logf("workloads done in %s", time.Since(t2).Round(time.Second))

	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "weft-graph", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:7680/api/v1/graph", svc.Spec.ClusterIP)
	// The API needs the release's bearer token, which the chart generated
	// into a Secret (as its README tells a user to read it); without it,
	// 401.
	sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, "weft-api-token", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(sec.Data["token"]))
	if _, err := getGraph(ctx, url, ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the graph API without the token: %v, want 401", err)
	}
	waitGraph := func(what string) {
		t.Helper()
		var last *graph.Graph
		t3 := time.Now()
		check := func() error {
			g, err := getGraph(ctx, url, token)
			if err != nil {
				return err
			}
			last = g
			return compareGraph(g, tr)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for err := check(); err != nil; err = check() {
			if time.Now().After(deadline) {
				b, _ := json.MarshalIndent(last, "", "  ")
				t.Fatalf("%s: %v\n(after 2m; the last graph:\n%s)", what, err, b)
			}
			time.Sleep(time.Second)
		}
		t.Logf("%s: the graph is the workloads' ground truth %s after they finished (%d edges, %d pods checked)",
			what, time.Since(t3).Round(time.Second), len(tr.Edges), len(tr.Pods))
	}
	waitGraph("the workloads")
	logFigures(t, u0, snapshot(ctx, t, c, ns))

	// A rollout restart of the correlator while a Job calls the broker:
	// nothing lost, nothing counted twice.
	t4 := time.Now()
	callsDuringRollout(ctx, t, c.Client, tr, func() { rolloutRestart(ctx, t, c.Client, ns, "weft-correlator") })
	waitGraph("calls during a rollout restart of the correlator")
	t.Logf("rollout restart checked in %s", time.Since(t4).Round(time.Second))

	// A rollout restart of the collector, as the chart rolls it out
	// (maxSurge), while a pooled connection is open and calls go on: no
	// gap, the connection and every call exactly, the two collectors'
	// copies of each counted once (see checkCollectorRollout).
	t5 := time.Now()
	graphNow := func() (*graph.Graph, error) { return getGraph(ctx, url, token) }
	checkCollectorRollout(ctx, t, c, ns, "surge", true, tr, graphNow, waitGraph)
	t.Logf("collector rollout restart (maxSurge, the chart's) checked in %s", time.Since(t5).Round(time.Second))
	// The same with the DaemonSet rolled out without surge: the calls
	// before and after the gap exactly, the gap measured. (It also checks
	// the first round's edges again, later.)
	t6 := time.Now()
	checkCollectorRollout(ctx, t, c, ns, "tap", false, tr, graphNow, waitGraph)
	t.Logf("collector rollout restart without surge checked in %s", time.Since(t6).Round(time.Second))

	// helm upgrade to a Neo4j: the migrations hook runs.
	checkUpgradeMigrations(ctx, t, c, cfg, chrt, values, bin, ns)

	// Nothing of the release is left after helm uninstall but PVCs.
	checkUninstall(ctx, t, c, cfg, "weft", ns)
	t.Logf("the whole test took %s", time.Since(t0).Round(time.Second))
}

func getGraph(ctx context.Context, url, token string) (*graph.Graph, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	var g graph.Graph
	if err := json.Unmarshal(body, &g); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return &g, nil
}

// waitPodsReady waits until every pod of ns is Ready (or Succeeded, for
// the migrations Job); on timeout it fails with each pod's state and the
// last lines of the logs of those that are not.
func waitPodsReady(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var notReady []corev1.Pod
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodSucceeded {
				continue
			}
			ready := false
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				notReady = append(notReady, p)
			}
		}
		if len(pods.Items) > 0 && len(notReady) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range notReady {
				fmt.Fprintf(&b, "%s: %s", p.Name, p.Status.Phase)
				for _, cs := range p.Status.ContainerStatuses {
					fmt.Fprintf(&b, " [%s ready=%v restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
					if w := cs.State.Waiting; w != nil {
						fmt.Fprintf(&b, " waiting %s: %s", w.Reason, w.Message)
					}
					if l := cs.LastTerminationState.Terminated; l != nil {
						fmt.Fprintf(&b, " last exit %d %s: %s", l.ExitCode, l.Reason, l.Message)
					}
					b.WriteString("]")
				}
				b.WriteString("\n")
				tail := int64(4)
				for _, ct := range p.Spec.Containers {
					out, _ := c.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: ct.Name, TailLines: &tail}).DoRaw(context.Background())
					fmt.Fprintf(&b, "  logs of %s:\n%s\n", ct.Name, out)
				}
			}
			t.Fatalf("pods of %s not Ready after %s:\n%s", ns, limit, b.String())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pods of %s: %v", ns, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
