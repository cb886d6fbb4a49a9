package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/neo4j"
)

// warnings collects the warnings an API server answers with.
type warnings struct {
	mu   sync.Mutex
	text []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text = append(w.text, text)
}

// checkPodSecurity asks the API server's Pod Security admission which of
// the release's running pods the restricted profile would refuse: a
// server-side dry run of labelling the namespace enforce=restricted
// answers with a warning naming each. The chart's README says every pod
// but the collector meets restricted, and the collector (hostPID, host
// paths, BPF and PERFMON, root) does not.
func checkPodSecurity(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	w := &warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := cs.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("dry-run label %s enforce=restricted: %v", ns, err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(w.text, "\n")
	sawCollector := false
	for _, p := range pods.Items {
		named := strings.Contains(all, p.Name)
		collector := p.Labels["app.kubernetes.io/component"] == "collector"
		switch {
		case collector && named:
			sawCollector = true
		case !collector && named:
			t.Errorf("pod %s would be refused by the restricted Pod Security profile:\n%s", p.Name, all)
		}
	}
	if !sawCollector {
		t.Errorf("Pod Security admission named no collector pod (the check would see nothing); its warnings:\n%s", all)
	}
}

// checkUninstall uninstalls the release and waits until nothing of it is
// left but PersistentVolumeClaims, what the chart marks
// helm.sh/resource-policy: keep (its README: the NATS CA and the API
// token) and the one hook object its README says Helm leaves (the Neo4j
// password Secret; the migrations Job and its ServiceAccount are deleted
// when the Job succeeds): every namespaced resource the API server lists in ns (except
// what Kubernetes itself keeps there: the default ServiceAccount,
// kube-root-ca.crt, events), and the release's cluster-scoped objects
// (its ClusterRoles and bindings).
func checkUninstall(ctx context.Context, t *testing.T, c *cluster.Cluster, cfg *action.Configuration, release, ns string) {
	t.Helper()
	if _, err := action.NewUninstall(cfg).Run(release); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	quiet := rest.CopyConfig(c.Config)
	quiet.WarningHandler = rest.NoWarnings{} // deprecated kinds, listed every second
	quiet.QPS, quiet.Burst = 200, 400        // some 60 lists a round
	disc, err := discovery.NewDiscoveryClientForConfig(quiet)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(quiet)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := disc.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		gvr        schema.GroupVersionResource
		namespaced bool
	}
	var all []res
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.APIResources {
			if slices.Contains(r.Verbs, "list") && !strings.Contains(r.Name, "/") {
				all = append(all, res{gv.WithResource(r.Name), r.Namespaced})
			}
		}
	}
	keep := map[string]bool{"serviceaccounts/default": true, "configmaps/kube-root-ca.crt": true}
	leftHooks := map[string]bool{"secrets/" + release + "-neo4j": true}
	kept := map[string]bool{}
	hooks := map[string]string{}
	natstest.CheckFor(t, 3*time.Minute, time.Second, func() error {
		var left []string
		for _, r := range all {
			switch r.gvr.Resource {
			case "events", "persistentvolumeclaims":
				continue
			}
			var opts metav1.ListOptions
			var ri dynamic.ResourceInterface = dyn.Resource(r.gvr)
			if r.namespaced {
				ri = dyn.Resource(r.gvr).Namespace(ns)
			} else {
				opts.LabelSelector = "app.kubernetes.io/instance=" + release
			}
			l, err := ri.List(ctx, opts)
			if err != nil {
				continue // not listable here (an aggregated API away)
			}
			for _, o := range l.Items {
				if r.namespaced && keep[r.gvr.Resource+"/"+o.GetName()] {
					continue
				}
				if o.GetAnnotations()["helm.sh/resource-policy"] == "keep" {
					kept[r.gvr.Resource+"/"+o.GetName()] = true
					continue
				}
				if h := o.GetAnnotations()["helm.sh/hook"]; h != "" && leftHooks[r.gvr.Resource+"/"+o.GetName()] {
					// Helm never deletes a hook's objects at uninstall;
					// the others' delete policy has.
					hooks[r.gvr.Resource+"/"+o.GetName()] = h
					continue
				}
				left = append(left, r.gvr.Resource+"/"+o.GetName())
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("after helm uninstall, left in %s: %v", ns, left)
		}
		return nil
	})
	var names []string
	for k := range kept {
		names = append(names, k)
	}
	slices.Sort(names)
	t.Logf("after helm uninstall only what the chart marks helm.sh/resource-policy: keep is left: %v, and hooks' objects Helm does not delete: %v", names, hooks)
}

// rolloutRestart restarts Deployment name of ns as `kubectl rollout
// restart` does (a new pod-template annotation) and waits until the
// rollout is complete: every replica updated and available, no old one
// left.
func rolloutRestart(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
	d, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("rollout restart %s: %v", name, err)
	}
	gen := d.Generation
	natstest.CheckFor(t, 3*time.Minute, 250*time.Millisecond, func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := d.Status
		want := *d.Spec.Replicas
		if st.ObservedGeneration < gen || st.UpdatedReplicas != want || st.Replicas != want || st.AvailableReplicas != want {
			return fmt.Errorf("rollout of %s: %+v, want %d replicas updated and available", name, st, want)
		}
		return nil
	})
}

// checkUpgradeMigrations runs a Neo4j on the host (testenv/neo4j), reached
// by the pods at the bridge's address through a proxy to its loopback
// port, and `helm upgrade`s the release to store the graph there: the
// upgrade's pre-upgrade hook must run the migrations Job (weft migrate up)
// to success, which `weft migrate status` (bin) then shows, pending before
// and applied after, and the graph stage must become Ready on Neo4j (it
// stays not ready while migrations are pending).
func checkUpgradeMigrations(ctx context.Context, t *testing.T, c *cluster.Cluster, cfg *action.Configuration, chrt *chart.Chart, values map[string]any, bin, ns string) {
	t.Helper()
	srv, err := neo4j.Start(ctx, neo4j.Options{})
	if err != nil {
		t.Fatalf("start Neo4j: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Logf("stop Neo4j: %v", err)
		}
		os.RemoveAll(srv.Dir)
	})
	ln, err := net.Listen("tcp", cluster.BridgeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", srv.Port))
				if err != nil {
					return
				}
				defer out.Close()
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
	status := func() string {
		cmd := exec.CommandContext(ctx, bin, "migrate", "status", "--neo4j-uri", srv.URI)
		cmd.Env = append(os.Environ(), "WEFT_NEO4J_USER="+srv.User, "WEFT_NEO4J_PASSWORD="+srv.Password)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("weft migrate status: %v\n%s", err, out)
		}
		return string(out)
	}
	if s := status(); !strings.Contains(s, "pending") || strings.Contains(s, "applied") {
		t.Fatalf("a new Neo4j: want only pending migrations, got:\n%s", s)
	}
	v := map[string]any{}
	for k, x := range values {
		v[k] = x
	}
	v["neo4j"] = map[string]any{"uri": fmt.Sprintf("bolt://%s", ln.Addr()), "password": srv.Password}
	up := action.NewUpgrade(cfg)
	up.Namespace, up.Timeout = ns, 5*time.Minute
	t0 := time.Now()
	if _, err := up.RunWithContext(ctx, "weft", chrt, v); err != nil {
		t.Fatalf("helm upgrade to Neo4j: %v", err)
	}
	if s := status(); strings.Contains(s, "pending") || !strings.Contains(s, "applied") {
		t.Fatalf("after helm upgrade: want every migration applied, got:\n%s", s)
	}
	natstest.CheckFor(t, 3*time.Minute, time.Second, func() error {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "weft-graph", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st := d.Status; st.ObservedGeneration < d.Generation || st.UpdatedReplicas != 1 || st.Replicas != 1 || st.AvailableReplicas != 1 {
			return fmt.Errorf("the graph stage on Neo4j not Ready: %+v", st)
		}
		return nil
	})
	t.Logf("helm upgrade to Neo4j: the migrations hook ran, the graph stage Ready on Neo4j %s after", time.Since(t0).Round(time.Second))
}
