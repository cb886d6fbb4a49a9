package metadata

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/weftobs/weft/streams/schema"
)

// fakeAPIServer serves GET /api/v1/pods as an API server does, in JSON:
// a list, or a watch that (asked for a watch-list stream) starts with the
// pods and a bookmark ending the initial events, then sends what is put on
// events; and GET of a ReplicaSet's metadata (PartialObjectMetadata, as an
// API server answers the metadata client's Accept header). It records
// each request's query and Accept header.
type fakeAPIServer struct {
	pods        []corev1.Pod
	replicaSets map[string]metav1.ObjectMeta // by "namespace/name"
	events      chan watch.Event

	mu       sync.Mutex
	requests []*http.Request
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Clone(context.Background()))
	f.mu.Unlock()
	if ns, name, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/apis/apps/v1/namespaces/"), "/replicasets/"); ok && r.Method == http.MethodGet {
		m, ok := f.replicaSets[ns+"/"+name]
		if !ok || !strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata") {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: m})
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/pods" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: f.pods}
		json.NewEncoder(w).Encode(list)
		return
	}
	enc := json.NewEncoder(w)
	send := func(typ watch.EventType, pod *corev1.Pod) {
		pod = pod.DeepCopy()
		pod.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		raw, _ := json.Marshal(pod)
		enc.Encode(metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}})
		w.(http.Flusher).Flush()
	}
	if q.Get("sendInitialEvents") == "true" {
		for i := range f.pods {
			send(watch.Added, &f.pods[i])
		}
		send(watch.Bookmark, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "10",
			Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
	}
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-f.events:
			send(ev.Type, ev.Object.(*corev1.Pod))
		}
	}
}

// TestKubeProviderREST runs the provider's own core/v1 client against a
// fake API server: the requests are client-go's generated client's (path,
// node field selector, protobuf preferred), the informer's watch-list
// stream is decoded, and later events reach the callback. The pod's
// ReplicaSet is read as metadata only, and its Deployment is the pod's
// workload.
func TestKubeProviderREST(t *testing.T) {
	ctrl := true
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "broker-7d9f8c-x2x4z", Namespace: "shop", UID: "uid-1", ResourceVersion: "9", Labels: map[string]string{"app": "broker"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "broker-7d9f8c", UID: "rs-1", Controller: &ctrl}}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "broker", Image: "nats:2.12"}}},
		Status: corev1.PodStatus{
			PodIPs:            []corev1.PodIP{{IP: "10.0.0.7"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "broker", ContainerID: "containerd://abc123"}},
		},
	}
	api := &fakeAPIServer{pods: []corev1.Pod{pod}, events: make(chan watch.Event), replicaSets: map[string]metav1.ObjectMeta{
		"shop/broker-7d9f8c": {Name: "broker-7d9f8c", Namespace: "shop", UID: "rs-1",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "broker", UID: "deploy-1", Controller: &ctrl}}},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()

	pods, err := newPodsClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	list, err := pods.List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "broker-7d9f8c-x2x4z" || list.ResourceVersion != "10" {
		t.Fatalf("List: %+v", list)
	}

	meta, err := metadata.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	p, err := newKubeProvider(pods, meta, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan Op, 10)
	ctx, cancel := context.WithCancel(context.Background())
	// Before srv.Close (deferred earlier): a failed test must end the
	// watch, which the server holds open until then.
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(op Op, _ *schema.Pod) { changes <- op }) }()
	next := func(what string) Op {
		t.Helper()
		select {
		case op := <-changes:
			return op
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
			return 0
		}
	}
	if op := next("the initial pod"); op != Upsert {
		t.Fatalf("first change %v, want Upsert", op)
	}
	if got, ok := p.Pod("uid-1"); !ok || got.GetName() != "broker-7d9f8c-x2x4z" || got.GetContainers()[0].GetId() != "abc123" ||
		got.GetWorkload().GetKind() != "Deployment" || got.GetWorkload().GetName() != "broker" || got.GetWorkload().GetUid() != "deploy-1" {
		t.Fatalf("Pod(uid-1) = %v, %v", got, ok)
	}
	changed := pod.DeepCopy()
	changed.ResourceVersion = "11"
	changed.Labels["version"] = "2"
	api.events <- watch.Event{Type: watch.Modified, Object: changed}
	if op := next("the update"); op != Upsert {
		t.Fatalf("change %v, want Upsert", op)
	}
	if got, _ := p.Pod("uid-1"); got.GetLabels()["version"] != "2" {
		t.Errorf("updated pod: %v", got)
	}
	deleted := changed.DeepCopy()
	deleted.ResourceVersion = "12"
	api.events <- watch.Event{Type: watch.Deleted, Object: deleted}
	if op := next("the delete"); op != Delete {
		t.Fatalf("change %v, want Delete", op)
	}
	if _, ok := p.Pod("uid-1"); ok {
		t.Error("deleted pod still served")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	api.mu.Lock()
	defer api.mu.Unlock()
	var sawWatch, sawOwner bool
	for _, r := range api.requests {
		if r.URL.Path == "/apis/apps/v1/namespaces/shop/replicasets/broker-7d9f8c" {
			sawOwner = true
			continue
		}
		if r.URL.Path != "/api/v1/pods" {
			t.Errorf("request for %s, want /api/v1/pods", r.URL.Path)
		}
		if fs := r.URL.Query().Get("fieldSelector"); fs != "spec.nodeName=node-a" {
			t.Errorf("request %s: fieldSelector %q, want spec.nodeName=node-a", r.URL, fs)
		}
		if a := r.Header.Get("Accept"); !strings.HasPrefix(a, "application/vnd.kubernetes.protobuf") || !strings.Contains(a, "application/json") {
			t.Errorf("request %s: Accept %q, want protobuf preferred, JSON accepted", r.URL, a)
		}
		if ua := r.Header.Get("User-Agent"); ua == "" || strings.HasPrefix(ua, "Go-http-client") {
			t.Errorf("request %s: User-Agent %q, want client-go's", r.URL, ua)
		}
		sawWatch = sawWatch || r.URL.Query().Get("sendInitialEvents") == "true"
	}
	if !sawOwner {
		t.Error("the pod's ReplicaSet was never read")
	}
	if !sawWatch {
		t.Error("the informer asked for no watch-list stream")
	}
}
