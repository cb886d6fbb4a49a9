package metadata

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
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
	p, err := newKubeProvider(fakePods{cs.CoreV1().Pods("")}, "node-a")
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
