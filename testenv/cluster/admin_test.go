package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
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
// left but PersistentVolumeClaims and what the chart marks
// helm.sh/resource-policy: keep (its README: the NATS CA and the API
// token): every namespaced resource the API server lists in ns (except
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
	kept := map[string]bool{}
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
	t.Logf("after helm uninstall only what the chart marks helm.sh/resource-policy: keep is left: %v", names)
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
