package metadata

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftobs/weft/streams/schema"
)

const doc = `
node: node-a
pods:
  - uid: 11111111-2222-3333-4444-555555555555
    name: app-7d4f9
    namespace: shop
    ips: [10.88.0.2]
    labels: {app: shop}
    owners: [{kind: ReplicaSet, name: app-7d4f, uid: rs1, controller: true}]
    workload: {kind: Deployment, name: app, uid: d1}
    containers: [{id: c1, name: app, image: shop:1.2}]
  - uid: 66666666-2222-3333-4444-555555555555
    name: broker
    namespace: infra
    hostNetwork: true
`

func TestParseFile(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
		pods               int
	}{
		{"valid", doc, "", 2},
		{"empty", "", "", 0},
		{"json", `{"node":"n","pods":[{"uid":"u","name":"p"}]}`, "", 1},
		{"unknown key", "pods:\n  - uid: u\n    nmae: x\n", "field nmae not found", 0},
		{"no uid", "pods:\n  - name: x\n    namespace: y\n", "no uid", 0},
		{"duplicate uid", "pods:\n  - uid: u\n  - uid: u\n", "appears twice", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFile([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Pods) != tt.pods {
				t.Errorf("%d pods, want %d", len(f.Pods), tt.pods)
			}
		})
	}
}

func TestFileProvider(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := NewFileProvider(path, "")
	if err != nil {
		t.Fatal(err)
	}
	p.Poll = 10 * time.Millisecond
	pod, ok := p.Pod("11111111-2222-3333-4444-555555555555")
	if !ok || pod.Name != "app-7d4f9" || pod.Namespace != "shop" || pod.Node != "node-a" ||
		pod.Labels["app"] != "shop" || len(pod.Owners) != 1 || pod.Owners[0].Kind != "ReplicaSet" ||
		pod.Workload.GetKind() != "Deployment" || pod.Workload.GetName() != "app" ||
		len(pod.Containers) != 1 || pod.Containers[0].Image != "shop:1.2" || pod.Ips[0] != "10.88.0.2" {
		t.Fatalf("pod = %v", pod)
	}
	if _, ok := p.Pod("nope"); ok {
		t.Error("unknown uid found")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan string, 10)
	go p.Run(ctx, func(op Op, pod *schema.Pod) {
		changes <- map[Op]string{Upsert: "upsert", Delete: "delete"}[op] + " " + pod.Name
	})
	// Remove the broker, rename the app: one delete, one upsert.
	next := strings.Replace(doc[:strings.Index(doc, "  - uid: 6666")], "app-7d4f9", "app-x", 1)
	if err := os.WriteFile(path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case c := <-changes:
			got[c] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("changes %v, want upsert app-x and delete broker", got)
		}
	}
	if !got["upsert app-x"] || !got["delete broker"] {
		t.Errorf("changes %v", got)
	}
	// A broken file keeps the last good version.
	cancel()
	os.WriteFile(path, []byte("pods: [{{{"), 0o644)
	if _, _, err := p.reload(); err == nil {
		t.Error("a broken file reloaded without error")
	}
	if pod, ok := p.Pod("11111111-2222-3333-4444-555555555555"); !ok || pod.Name != "app-x" {
		t.Errorf("after a broken file: %v %v", pod, ok)
	}
}

func TestPodFromAPI(t *testing.T) {
	ctrl := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "u1", Name: "app-1", Namespace: "shop", Labels: map[string]string{"app": "shop"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "app-5f", UID: "rs1", Controller: &ctrl}}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "shop:1"}}},
		Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}, {IP: "fd00::5"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://abc"}}},
	}
	sp := PodFromAPI(pod)
	if sp.Uid != "u1" || sp.Node != "node-a" || len(sp.Ips) != 2 || sp.Containers[0].Id != "abc" ||
		sp.Containers[0].Image != "shop:1" || !sp.Owners[0].Controller || sp.Owners[0].Kind != "ReplicaSet" {
		t.Errorf("PodFromAPI = %v", sp)
	}
}
