package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/weftobs/weft/charts/render"
	"github.com/weftobs/weft/collectors/metadata"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestKubeMetadataProvider runs the collector's Kubernetes metadata
// provider (collectors/metadata) against the real API server, as the
// chart's collector ServiceAccount with exactly the RBAC the chart
// renders: its informer lists and watches only its node's pods, resolves
// each pod's workload to the top controller (a Deployment through its
// ReplicaSet, a CronJob through its Job) and follows deletes. Then, for
// each rule of the chart's collector ClusterRole, the same run as an
// account that lacks only that rule must fail, saying what it lacked.
func TestKubeMetadataProvider(t *testing.T) {
	c := cluster.ForTest(t, cluster.Options{Dir: filepath.Join(os.TempDir(), "weft-cluster-test")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cs := c.Client

	// The chart's collector ClusterRole, as `helm install` would create it.
	out, err := render.Render(nil, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	for _, doc := range strings.Split(out, "\n---\n") {
		if !strings.Contains(doc, "kind: ClusterRole\n") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode the chart's ClusterRole: %v", err)
		}
		if r, ok := obj.(*rbacv1.ClusterRole); ok && strings.Contains(r.Name, "collector") {
			role = r
		}
	}
	if role == nil || len(role.Rules) == 0 {
		t.Fatalf("the chart renders no collector ClusterRole:\n%s", out)
	}

	// Workloads: a Deployment's pod, a CronJob's (through a Job it owns),
	// a bare pod, and a pod bound to another node (which never runs).
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appsNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDefaultSA(ctx, t, cs, appsNS)
	sleeper := corev1.Container{Name: "main", Image: cluster.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}
	mustCreate(t, createDeployment(ctx, cs, "web", 1, corev1.PodSpec{Containers: []corev1.Container{sleeper}}))
	suspend := true
	cj, err := cs.BatchV1().CronJobs(appsNS).Create(ctx, &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: appsNS},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", Suspend: &suspend,
			JobTemplate: batchv1.JobTemplateSpec{Spec: jobSpec("nightly", corev1.PodSpec{Containers: []corev1.Container{sleeper}})}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	controller := true
	if _, err := cs.BatchV1().Jobs(appsNS).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly-manual", Namespace: appsNS,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: &controller}}},
		Spec: cj.Spec.JobTemplate.Spec,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, node := range map[string]string{"bare": "", "elsewhere": "other-node"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appsNS, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{sleeper}}}
		if _, err := cs.CoreV1().Pods(appsNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := waitPods(ctx, t, cs, "app=web", 1)[0]
	nightly := waitPods(ctx, t, cs, "job-name=nightly-manual", 1)[0]
	bare := waitPods(ctx, t, cs, "app=bare", 1)[0]
	elsewhere, err := cs.CoreV1().Pods(appsNS).Get(ctx, "elsewhere", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What the provider must serve: uid → workload (kind/name, "" for
	// none), only this node's pods.
	want := map[string]string{string(web.UID): "Deployment/web", string(nightly.UID): "CronJob/nightly", string(bare.UID): ""}

	// check runs a provider as account sa and says how it differs from
	// want; nil when it serves exactly that and follows a delete.
	check := func(t *testing.T, sa string, deleted *corev1.Pod) error {
		p, err := metadata.NewKubeProviderForConfig(saConfig(ctx, t, c, sa), cluster.NodeName)
		if err != nil {
			return err
		}
		pctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		var events []string
		evCh := make(chan string, 64)
		go func() {
			done <- p.Run(pctx, func(op metadata.Op, sp *schema.Pod) {
				what := "Upsert "
				if op == metadata.Delete {
					what = "Delete "
				}
				evCh <- what + sp.GetName()
			})
		}()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("provider Run: %v", err)
			}
		}()
		var synced bool
		var listErr error
		natstest.CheckFor(t, 2*time.Minute, 100*time.Millisecond, func() error {
			synced, listErr = p.HasSynced(), p.ListError()
			if !synced && listErr == nil {
				return fmt.Errorf("provider of %s neither synced nor failed", sa)
			}
			return nil
		})
		if !synced {
			return fmt.Errorf("the node's pods were never listed: %v", listErr)
		}
		var problems []string
		for uid, w := range want {
			sp, ok := p.Pod(uid)
			if !ok {
				problems = append(problems, "pod "+uid+" not served")
				continue
			}
			got := ""
			if o := schema.WorkloadOf(sp); o != nil {
				got = o.GetKind() + "/" + o.GetName()
			}
			if got != w {
				problems = append(problems, fmt.Sprintf("pod %s: workload %q, want %q", sp.GetName(), got, w))
			}
			if sp.GetNode() != cluster.NodeName || sp.GetNamespace() != appsNS {
				problems = append(problems, fmt.Sprintf("pod %s: node %q namespace %q", sp.GetName(), sp.GetNode(), sp.GetNamespace()))
			}
		}
		if _, ok := p.Pod(string(elsewhere.UID)); ok {
			problems = append(problems, "serves pod elsewhere, which is bound to another node")
		}
		if n := p.OwnerLookupFailures(); n > 0 {
			problems = append(problems, fmt.Sprintf("%d owner look-ups failed", n))
		}
		if deleted != nil && len(problems) == 0 {
			grace := int64(0)
			if err := cs.CoreV1().Pods(appsNS).Delete(ctx, deleted.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
				t.Fatal(err)
			}
			natstest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
				for len(evCh) > 0 {
					events = append(events, <-evCh)
				}
				if _, ok := p.Pod(string(deleted.UID)); ok || !slices.Contains(events, "Delete "+deleted.Name) {
					return fmt.Errorf("pod %s deleted, still served (events %v)", deleted.Name, events)
				}
				return nil
			})
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return nil
	}

	grant(ctx, t, cs, "weft-collector", role.Rules)
	if err := check(t, "weft-collector", nil); err != nil {
		t.Fatalf("with the chart's RBAC: %v", err)
	}

	// Each rule missing in turn: the provider must fail, saying what.
	tests := []struct {
		name, missing string
		wantErr       string
	}{
		{"no list or watch on pods", "pods", "pods is forbidden"},
		{"no get on replicasets", "replicasets", `pod web-`},
		{"no get on jobs", "jobs", `pod nightly-manual-`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rules []rbacv1.PolicyRule
			for _, r := range role.Rules {
				if !slices.Contains(r.Resources, tt.missing) {
					rules = append(rules, r)
				}
			}
			if len(rules) != len(role.Rules)-1 {
				t.Fatalf("the chart's collector role has no one rule for %s: %+v", tt.missing, role.Rules)
			}
			sa := "weft-collector-without-" + tt.missing
			grant(ctx, t, cs, sa, rules)
			err := check(t, sa, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("without the rule for %s: %v, want an error with %q", tt.missing, err, tt.wantErr)
			}
			t.Logf("without the rule for %s: %v", tt.missing, err)
		})
	}

	// Last, with the chart's RBAC again: a deleted pod leaves the
	// provider (the informer's watch).
	if err := check(t, "weft-collector", &bare); err != nil {
		t.Fatalf("with the chart's RBAC, following a delete: %v", err)
	}
}

// grant makes ServiceAccount sa in namespace weft with a ClusterRole of
// rules bound to it, as the chart binds its collector's.
func grant(ctx context.Context, t *testing.T, cs kubernetes.Interface, sa string, rules []rbacv1.PolicyRule) {
	t.Helper()
	const ns = "weft"
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: sa},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// saConfig is a client config for the API server with a token of
// ServiceAccount sa of namespace weft (TokenRequest), and no other
// credential.
func saConfig(ctx context.Context, t *testing.T, c *cluster.Cluster, sa string) *rest.Config {
	t.Helper()
	tok, err := c.Client.CoreV1().ServiceAccounts("weft").CreateToken(ctx, sa, &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = tok.Status.Token
	return cfg
}
