package metadata

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/weftobs/weft/streams/schema"
)

// KubeProvider serves the pods of one node from the Kubernetes API: an
// informer with the field selector spec.nodeName=<node>, so a collector
// watches its own node's pods only (RBAC: get/list/watch pods). Its tests
// run it against client-go's fake clientset (there is no cluster here):
// the informer wiring, the node selector and add/update/delete are
// tested, a real API server is not.
type KubeProvider struct {
	node     string
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer

	mu   sync.RWMutex
	pods map[string]*schema.Pod
	fn   func(Op, *schema.Pod)
}

var _ Watcher = (*KubeProvider)(nil)

// NewKubeProvider connects with the in-cluster config (the pod's service
// account).
func NewKubeProvider(node string) (*KubeProvider, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: in-cluster config: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: client: %w", err)
	}
	return newKubeProvider(cs, node)
}

// newKubeProvider watches node's pods through cs.
func newKubeProvider(cs kubernetes.Interface, node string) (*KubeProvider, error) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	p := &KubeProvider{node: node, factory: f, informer: f.Core().V1().Pods().Informer(), pods: map[string]*schema.Pod{}}
	_, err := p.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.upsert(obj) },
		UpdateFunc: func(_, obj any) { p.upsert(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				p.remove(string(pod.UID))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: handler: %w", err)
	}
	return p, nil
}

func (p *KubeProvider) upsert(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	sp := PodFromAPI(pod)
	p.mu.Lock()
	p.pods[sp.Uid] = sp
	fn := p.fn
	p.mu.Unlock()
	if fn != nil {
		fn(Upsert, sp)
	}
}

func (p *KubeProvider) remove(uid string) {
	p.mu.Lock()
	sp, ok := p.pods[uid]
	delete(p.pods, uid)
	fn := p.fn
	p.mu.Unlock()
	if ok && fn != nil {
		fn(Delete, sp)
	}
}

// Pod returns the pod with uid, if the informer has it.
func (p *KubeProvider) Pod(uid string) (*schema.Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	sp, ok := p.pods[uid]
	return sp, ok
}

// Run starts the informer, waits for its first sync and reports changes
// until ctx ends.
func (p *KubeProvider) Run(ctx context.Context, fn func(Op, *schema.Pod)) error {
	p.mu.Lock()
	p.fn = fn
	p.mu.Unlock()
	p.factory.Start(ctx.Done())
	defer p.factory.Shutdown()
	// Stopped before the first sync is a shutdown, not a failure: the
	// collector publishes with what is known meanwhile.
	cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced)
	<-ctx.Done()
	return nil
}

// PodFromAPI converts a Kubernetes pod. Container ids lose their runtime
// prefix ("containerd://"), as cgroup paths carry them.
func PodFromAPI(pod *corev1.Pod) *schema.Pod {
	sp := &schema.Pod{
		Uid: string(pod.UID), Name: pod.Name, Namespace: pod.Namespace, Node: pod.Spec.NodeName,
		HostNetwork: pod.Spec.HostNetwork, Labels: pod.Labels,
	}
	for _, ip := range pod.Status.PodIPs {
		sp.Ips = append(sp.Ips, ip.IP)
	}
	for _, o := range pod.OwnerReferences {
		sp.Owners = append(sp.Owners, &schema.OwnerRef{Kind: o.Kind, Name: o.Name, Uid: string(o.UID), Controller: o.Controller != nil && *o.Controller})
	}
	images := map[string]string{}
	for _, c := range pod.Spec.Containers {
		images[c.Name] = c.Image
	}
	for _, st := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		id := st.ContainerID
		if _, after, ok := strings.Cut(id, "://"); ok {
			id = after
		}
		img := images[st.Name]
		if img == "" {
			img = st.Image
		}
		sp.Containers = append(sp.Containers, &schema.Container{Id: id, Name: st.Name, Image: img})
	}
	return sp
}
