package metadata

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftobs/weft/streams/schema"
)

// fakePods is the fake clientset's pods client, marked as the fake
// clientset is: it serves no watch-list streams, so the informer lists.
type fakePods struct{ typedcorev1.PodInterface }

func (fakePods) IsWatchListSemanticsUnSupported() bool { return true }

// TestKubeProvider runs the informer against client-go's fake clientset:
// it lists with this node's field selector, and pods added, changed and
// deleted reach Pod and the callback.
func TestKubeProvider(t *testing.T) {
	ctrl := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "broker-0", Namespace: "shop", UID: "uid-1", Labels: map[string]string{"app": "broker"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "broker", UID: "ss-1", Controller: &ctrl}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "broker", Image: "nats:2.12"}}},
		Status: corev1.PodStatus{
			PodIPs:            []corev1.PodIP{{IP: "10.0.0.7"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "broker", ContainerID: "containerd://abc123"}},
		},
	}
	cs := fake.NewClientset(pod)
	var selectors []string
	cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		selectors = append(selectors, a.(k8stesting.ListAction).GetListRestrictions().Fields.String())
		return false, nil, nil
	})
	p, err := newKubeProvider(fakePods{cs.CoreV1().Pods("")}, nil, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	type change struct {
		op  Op
		pod *schema.Pod
	}
	var mu sync.Mutex
	var changes []change
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(op Op, sp *schema.Pod) {
			mu.Lock()
			changes = append(changes, change{op, sp})
			mu.Unlock()
		})
	}()
	waitFor := func(what string, ok func([]change) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			got := ok(changes)
			mu.Unlock()
			if got {
				return
			}
		}
		t.Fatalf("timed out waiting for %s; changes %v", what, changes)
	}
	waitFor("the listed pod", func(c []change) bool { return len(c) == 1 && c[0].op == Upsert })

	got, ok := p.Pod("uid-1")
	if !ok {
		t.Fatal("Pod(uid-1): not found")
	}
	if got.GetName() != "broker-0" || got.GetNamespace() != "shop" || got.GetNode() != "node-a" ||
		len(got.GetIps()) != 1 || got.GetIps()[0] != "10.0.0.7" ||
		len(got.GetContainers()) != 1 || got.GetContainers()[0].GetId() != "abc123" || got.GetContainers()[0].GetImage() != "nats:2.12" ||
		len(got.GetOwners()) != 1 || got.GetOwners()[0].GetKind() != "StatefulSet" || !got.GetOwners()[0].GetController() {
		t.Errorf("pod from the API: %v", got)
	}
	if len(selectors) == 0 || selectors[0] != "spec.nodeName=node-a" {
		t.Errorf("list field selectors %q, want spec.nodeName=node-a", selectors)
	}

	pods := cs.CoreV1().Pods("shop")
	changed := pod.DeepCopy()
	changed.Labels["version"] = "2"
	if _, err := pods.Update(ctx, changed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the update", func(c []change) bool {
		return len(c) == 2 && c[1].op == Upsert && c[1].pod.GetLabels()["version"] == "2"
	})
	if err := pods.Delete(ctx, "broker-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the delete", func(c []change) bool { return len(c) == 3 && c[2].op == Delete && c[2].pod.GetUid() == "uid-1" })
	if _, ok := p.Pod("uid-1"); ok {
		t.Error("deleted pod still served")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestKubeProviderOwners resolves pods to their top controller as a
// cluster owns them: a Deployment's pods through its ReplicaSets (the
// same workload across a rollout), a CronJob's through its Jobs,
// StatefulSet and DaemonSet pods directly, a bare pod to none. Each
// ReplicaSet or Job is read once (a GET of its metadata, the only verb
// used), forgotten with its last pod; one that is gone or cannot be read
// leaves the pod's controller as its workload, and a failed read is
// counted.
func TestKubeProviderOwners(t *testing.T) {
	ctrl := true
	ref := func(apiVersion, kind, name, uid string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: &ctrl}}
	}
	owned := func(apiVersion, kind, name, uid, ns string, owners []metav1.OwnerReference) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(uid), OwnerReferences: owners}}
	}
	// What the cluster holds besides pods.
	controllers := []runtime.Object{
		owned("apps/v1", "ReplicaSet", "web-7d9f8c", "rs-1", "shop", ref("apps/v1", "Deployment", "web", "deploy-web")),
		owned("apps/v1", "ReplicaSet", "web-5c6b4d", "rs-2", "shop", ref("apps/v1", "Deployment", "web", "deploy-web")),
		owned("batch/v1", "Job", "backup-29431200", "job-1", "shop", ref("batch/v1", "CronJob", "backup", "cron-backup")),
		owned("batch/v1", "Job", "migrate", "job-2", "shop", nil),                                             // a Job of its own
		owned("apps/v1", "ReplicaSet", "web-0ld", "rs-other", "shop", ref("apps/v1", "Deployment", "x", "x")), // not the pod's (uid differs)
		owned("batch/v1", "Job", "locked", "job-3", "shop", ref("batch/v1", "CronJob", "locked", "cron-locked")),
	}
	tests := []struct {
		pod, kind, name, apiVersion, uid string
		wantKind, wantName               string // "" for a bare pod
	}{
		{"web-7d9f8c-abcde", "ReplicaSet", "web-7d9f8c", "apps/v1", "rs-1", "Deployment", "web"},
		{"web-7d9f8c-fghij", "ReplicaSet", "web-7d9f8c", "apps/v1", "rs-1", "Deployment", "web"},
		{"web-5c6b4d-klmno", "ReplicaSet", "web-5c6b4d", "apps/v1", "rs-2", "Deployment", "web"}, // after a rollout
		{"backup-29431200-pqrst", "Job", "backup-29431200", "batch/v1", "job-1", "CronJob", "backup"},
		{"migrate-uvwxy", "Job", "migrate", "batch/v1", "job-2", "Job", "migrate"},
		{"nats-0", "StatefulSet", "nats", "apps/v1", "sts-nats", "StatefulSet", "nats"},
		{"fluent-bit-z9x8y", "DaemonSet", "fluent-bit", "apps/v1", "ds-fb", "DaemonSet", "fluent-bit"},
		{"debug", "", "", "", "", "", ""},
		{"gone-5f5f5f-aaaaa", "ReplicaSet", "gone-5f5f5f", "apps/v1", "rs-gone", "ReplicaSet", "gone-5f5f5f"},
		{"web-0ld-bbbbb", "ReplicaSet", "web-0ld", "apps/v1", "rs-old", "ReplicaSet", "web-0ld"},
		{"locked-29431200-ccccc", "Job", "locked", "batch/v1", "job-3", "Job", "locked"}, // forbidden below
	}
	var pods []runtime.Object
	for i, tt := range tests {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tt.pod, Namespace: "shop", UID: types.UID(fmt.Sprintf("pod-%d", i))},
			Spec: corev1.PodSpec{NodeName: "node-a"}}
		if tt.kind != "" {
			p.OwnerReferences = ref(tt.apiVersion, tt.kind, tt.name, tt.uid)
		}
		pods = append(pods, p)
	}
	cs := fake.NewClientset(pods...)
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	meta := metadatafake.NewSimpleMetadataClient(scheme, controllers...)
	meta.PrependReactor("get", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == "locked" {
			return true, nil, apierrors.NewForbidden(batchv1.Resource("jobs"), "locked", errors.New("RBAC"))
		}
		return false, nil, nil
	})
	p, err := newKubeProvider(fakePods{cs.CoreV1().Pods("")}, meta, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]*schema.Pod{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(op Op, sp *schema.Pod) {
			mu.Lock()
			defer mu.Unlock()
			if op == Delete {
				delete(seen, sp.GetName())
				return
			}
			seen[sp.GetName()] = sp
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	checkFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != len(tests) {
			return fmt.Errorf("%d pods seen, want %d", len(seen), len(tests))
		}
		return nil
	})
	for _, tt := range tests {
		t.Run(tt.pod, func(t *testing.T) {
			mu.Lock()
			sp := seen[tt.pod]
			mu.Unlock()
			w := sp.GetWorkload()
			if w.GetKind() != tt.wantKind || w.GetName() != tt.wantName {
				t.Errorf("workload %s/%s, want %s/%s", w.GetKind(), w.GetName(), tt.wantKind, tt.wantName)
			}
			if tt.kind != "" && (len(sp.GetOwners()) != 1 || sp.GetOwners()[0].GetName() != tt.name || sp.GetOwners()[0].GetKind() != tt.kind) {
				t.Errorf("owners %v, want the pod's own %s %s", sp.GetOwners(), tt.kind, tt.name)
			}
			if got := schema.WorkloadOf(sp); got.GetName() != tt.wantName {
				t.Errorf("WorkloadOf = %v, want %s", got, tt.wantName)
			}
		})
	}
	gets := map[string]int{}
	for _, a := range meta.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("%s %s: the provider only gets owners", a.GetVerb(), a.GetResource().Resource)
		}
		gets[a.GetResource().Resource+"/"+a.(k8stesting.GetAction).GetName()]++
	}
	want := map[string]int{"replicasets/web-7d9f8c": 1, "replicasets/web-5c6b4d": 1, "replicasets/gone-5f5f5f": 1, "replicasets/web-0ld": 1,
		"jobs/backup-29431200": 1, "jobs/migrate": 1, "jobs/locked": 1}
	if !maps.Equal(gets, want) {
		t.Errorf("owner look-ups %v, want %v (one per ReplicaSet or Job, none for other kinds)", gets, want)
	}
	if n := p.OwnerLookupFailures(); n != 1 {
		t.Errorf("OwnerLookupFailures = %d, want 1 (the forbidden Job)", n)
	}

	// The last pod of a ReplicaSet takes its record along; another
	// still owned stays.
	podsAPI := cs.CoreV1().Pods("shop")
	for _, name := range []string{"web-7d9f8c-abcde", "web-7d9f8c-fghij", "web-5c6b4d-klmno"} {
		if err := podsAPI.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, func() error {
		p.owners.mu.Lock()
		defer p.owners.mu.Unlock()
		if _, ok := p.owners.tops["rs-1"]; ok {
			return errors.New("rs-1 still cached after its last pod went")
		}
		if _, ok := p.owners.tops["job-1"]; !ok {
			return errors.New("job-1 forgotten while its pod runs")
		}
		return nil
	})
}

// checkFor polls f until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatal(err)
}
