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
	"github.com/weftobs/weft/testenv/natstest"
)

// TestWeftOnKubernetes installs charts/weft with the Helm SDK on a real
// cluster, in a namespace labelled as the chart's README says, with weft's
// own image (charts/image) and NATS built from the nats-server module
// weft depends on; every pod must become Ready, the collector unprivileged
// with only the chart's capabilities. Then a caller Job calls a broker
// Deployment through its Service, logging each answered call, and the
// graph the chart serves must hold those calls.
func TestWeftOnKubernetes(t *testing.T) {
	// Not yet in CI: it passed in a clean run by hand (the chart with its
	// NATS identities, mutual TLS and API token on; every pod Ready 23 s
	// after install; the caller's 25 calls in the graph), once; the other
	// workloads of the cluster issue are still to come.
	if os.Getenv("WEFT_CLUSTER_E2E") != "1" {
		t.Skip("set WEFT_CLUSTER_E2E=1 to run weft's chart on a real cluster")
	}
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
	natsBin := filepath.Join(tmp, "nats-server")
	nb := exec.CommandContext(ctx, "go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
	nb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := nb.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	c := cluster.ForTest(t, cluster.Options{Dir: filepath.Join(os.TempDir(), "weft-cluster-test"), Images: map[string]string{layout: ch.Reference()}})
	const natsImage = "weft.local/nats:test"
	if err := c.LoadBinaryImage(ctx, natsImage, natsBin); err != nil {
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
	// The default layout's streams have 3 replicas, and the chart's NATS
	// servers refuse to share a node (required anti-affinity): on one
	// node, one NATS server and streams of one replica.
	streams := map[string]any{}
	for name, subj := range map[string]string{"EVENTS": "weft.events.>", "CALLS": "weft.calls.>", "DLQ": "weft.dlq.>"} {
		streams[name] = map[string]any{"subjects": []any{subj}, "maxAge": "24h", "replicas": 1}
	}
	values := map[string]any{
		"topology": map[string]any{
			"apiVersion": "weft.dev/v1", "kind": "Topology", "metadata": map[string]any{"name": "single-node"},
			"streams": streams,
			"stages": []any{
				map[string]any{"name": "collector", "kind": "collector", "deploy": "daemonset", "outputs": []any{"EVENTS"}},
				map[string]any{"name": "correlator", "kind": "correlator", "deploy": "deployment", "inputs": []any{"EVENTS"}, "outputs": []any{"CALLS"}},
				map[string]any{"name": "graph", "kind": "graph", "deploy": "deployment", "inputs": []any{"CALLS"}},
			},
		},
		"image": map[string]any{"pullPolicy": "Never"},
		"nats": map[string]any{
			"replicas":     1,
			"image":        map[string]any{"repository": "weft.local/nats", "tag": "test", "pullPolicy": "Never"},
			"storage":      map[string]any{"emptyDir": true, "size": "1Gi"},
			"maxFileStore": "900Mi",
			"resources":    map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "128Mi"}},
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
	t0 := time.Now()
	if _, err := inst.RunWithContext(ctx, chrt, values); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	waitPodsReady(t, c, ns, 6*time.Minute)
	t.Logf("every weft pod Ready %s after helm install", time.Since(t0).Round(time.Second))

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

	// The workload: a caller calling a broker through its Service.
	const calls = 25
	if err := serveEcho(ctx, c.Client, "default", "broker", 1); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, c.Client, "default", "broker", 1)
	script := fmt.Sprintf(`for i in $(seq 1 %d); do echo "call $i $(nc -w 5 broker 8080 </dev/null)"; done`, calls)
	logs := runJob(t, c.Client, "default", "caller", script)
	answered := strings.Count(logs, "served-by broker-")
	if answered != calls {
		t.Fatalf("the caller's ground truth: %d of %d calls answered:\n%s", answered, calls, logs)
	}

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
	bp, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=broker"})
	if err != nil || len(bp.Items) != 1 {
		t.Fatalf("the broker pod: %v (%d pods)", err, len(bp.Items))
	}
	broker := "Pod:" + string(bp.Items[0].UID)
	var last *graph.Graph
	// What main has today: the calls reach the graph as CALLS into the
	// broker's pod (the Service VIP resolved to the pod that served), as
	// many as the caller logged. Still to tighten after the owners work
	// lands: the caller's side is a Process of the node, not the caller
	// pod, and owners are not named by their Deployment.
	natstest.CheckFor(t, 2*time.Minute, time.Second, func() error {
		g, err := getGraph(ctx, url, token)
		if err != nil {
			return err
		}
		last = g
		total := 0
		for _, e := range g.Edges {
			if e.Type == "CALLS" && e.To == broker {
				if n, ok := e.Props["count"].(float64); ok {
					total += int(n)
				}
			}
		}
		if total != calls {
			return fmt.Errorf("%d CALLS into the broker pod %s, the caller logged %d (%d nodes, %d edges)", total, broker, calls, len(g.Nodes), len(g.Edges))
		}
		return nil
	})
	b, _ := json.MarshalIndent(last, "", "  ")
	t.Logf("graph:\n%s", b)
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
func waitPodsReady(t *testing.T, c *cluster.Cluster, ns string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		pods, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
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
		time.Sleep(2 * time.Second)
	}
}
