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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/weftobs/weft/streams/schema"
)

// KubeProvider serves the pods of one node from the Kubernetes API: an
// informer with the field selector spec.nodeName=<node>, so a collector
// watches its own node's pods only (RBAC: list and watch pods). Each pod's
// workload is its top controller, read through its ReplicaSet or Job
// (see owners; RBAC: get replicasets and jobs). Its tests here run it
// against client-go's fake clientsets and a fake API server (the informer
// wiring, the node selector, add/update/delete, the owner look-ups);
// testenv/cluster's TestKubeMetadataProvider runs it against a real API
// server as the chart's collector ServiceAccount, with exactly the
// chart's RBAC and with each of its rules missing in turn.
//
// It talks to the API with a core/v1 REST client of its own (podsClient)
// rather than client-go's generated clientset and informer factory: those
// link and register every API group at start, which costs the collector
// resident memory (tens of MiB of binary touched) for nothing it uses.
type KubeProvider struct {
	node     string
	informer cache.SharedIndexInformer
	owners   *owners

	mu   sync.RWMutex
	pods map[string]*schema.Pod
	fn   func(Op, *schema.Pod)
	ctx  context.Context // Run's, for the owner look-ups
	// listErr is the last error listing or watching pods (forbidden: the
	// service account lacks list or watch on pods).
	listErr error
}

var _ Watcher = (*KubeProvider)(nil)

// resync is how often the informer replays its cache, as the informer
// factory was given before.
const resync = 10 * time.Minute

// NewKubeProvider connects with the in-cluster config (the pod's service
// account).
func NewKubeProvider(node string) (*KubeProvider, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: in-cluster config: %w", err)
	}
	return NewKubeProviderForConfig(cfg, node)
}

// NewKubeProviderForConfig is NewKubeProvider with the API server and
// credentials of cfg (a kubeconfig's, or a service account's token): how
// the cluster tests run it with exactly the chart's RBAC.
func NewKubeProviderForConfig(cfg *rest.Config, node string) (*KubeProvider, error) {
	pods, err := newPodsClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: metadata client: %w", err)
	}
	return newKubeProvider(pods, meta, node)
}

// podLister is what the informer calls of a cluster-wide pods client:
// client-go's generated PodInterface (the fake clientset's, in tests) and
// podsClient both have it.
type podLister interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// newKubeProvider watches node's pods through pods, as client-go's
// informer factory builds a pod informer: list and watch with the node's
// field selector, a namespace index, the factory's resync period and, if
// pods serves them, watch-list streams. meta reads the metadata of the
// pods' ReplicaSets and Jobs (nil: a pod's workload is its controller).
func newKubeProvider(pods podLister, meta metadata.Interface, node string) (*KubeProvider, error) {
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	informer := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, pods), &corev1.Pod{},
		cache.SharedIndexInformerOptions{ResyncPeriod: resync, Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}})
	p := &KubeProvider{node: node, informer: informer, owners: newOwners(meta), pods: map[string]*schema.Pod{}, ctx: context.Background()}
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
	err = p.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		p.mu.Lock()
		p.listErr = err
		p.mu.Unlock()
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata: error handler: %w", err)
	}
	return p, nil
}

// podsClient lists and watches pods in all namespaces over the core/v1
// API, with the requests client-go's generated pods client makes (protobuf
// preferred, JSON accepted), and a scheme that knows core/v1 only.
type podsClient struct {
	client rest.Interface
	params runtime.ParameterCodec
}

// newPodsClient configures cfg as client-go's generated core/v1 client
// does (its setConfigDefaults) for a scheme of core/v1 and the meta types.
func newPodsClient(cfg *rest.Config) (*podsClient, error) {
	s := runtime.NewScheme()
	// As client-go's kubernetes/scheme: the meta types (ListOptions,
	// WatchEvent, Status) at version "v1", then core/v1.
	metav1.AddToGroupVersion(s, metav1.Unversioned)
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	config := *cfg
	gv := corev1.SchemeGroupVersion
	config.GroupVersion = &gv
	config.APIPath = "/api"
	config.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(s, serializer.NewCodecFactory(s)).WithoutConversion()
	if config.UserAgent == "" {
		config.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	c, err := rest.RESTClientFor(&config)
	if err != nil {
		return nil, err
	}
	return &podsClient{client: c, params: runtime.NewParameterCodec(s)}, nil
}

// List lists pods, as the generated client's List.
func (c *podsClient) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	list := &corev1.PodList{}
	err := c.client.Get().
		UseProtobufAsDefaultIfPreferred(true).
		Resource("pods").
		VersionedParams(&opts, c.params).
		Timeout(timeout(opts)).
		Do(ctx).
		Into(list)
	return list, err
}

// Watch watches pods, as the generated client's Watch.
func (c *podsClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.client.Get().
		UseProtobufAsDefaultIfPreferred(true).
		Resource("pods").
		VersionedParams(&opts, c.params).
		Timeout(timeout(opts)).
		Watch(ctx)
}

func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}

func (p *KubeProvider) upsert(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	sp := PodFromAPI(pod)
	p.mu.RLock()
	ctx := p.ctx
	p.mu.RUnlock()
	sp.Workload = p.owners.top(ctx, pod.Namespace, controllerOf(pod.OwnerReferences))
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
	// The last pod of a controller takes what was known of it along.
	for _, o := range sp.GetOwners() {
		if !p.ownedLocked(o.GetUid()) {
			p.owners.forget(o.GetUid())
		}
	}
	p.mu.Unlock()
	if ok && fn != nil {
		fn(Delete, sp)
	}
}

// ownedLocked reports whether a known pod has the owner uid.
func (p *KubeProvider) ownedLocked(uid string) bool {
	for _, sp := range p.pods {
		for _, o := range sp.GetOwners() {
			if o.GetUid() == uid {
				return true
			}
		}
	}
	return false
}

// OwnerLookupFailures is how many look-ups of a pod's ReplicaSet or Job
// failed for another reason than its being gone (forbidden, the API server
// away): those pods were served with their controller as the workload
// until their next update or resync.
func (p *KubeProvider) OwnerLookupFailures() uint64 { return p.owners.failed.Load() }

// HasSynced reports whether the informer has listed the node's pods once.
func (p *KubeProvider) HasSynced() bool { return p.informer.HasSynced() }

// ListError is the last error listing or watching the node's pods (the
// informer retries with backoff), nil if there was none.
func (p *KubeProvider) ListError() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.listErr
}

// Pod returns the pod with uid, if the informer has it.
func (p *KubeProvider) Pod(uid string) (*schema.Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	sp, ok := p.pods[uid]
	return sp, ok
}

// Run starts the informer, waits for its first sync and reports changes
// until ctx ends; it returns once the informer has stopped.
func (p *KubeProvider) Run(ctx context.Context, fn func(Op, *schema.Pod)) error {
	p.mu.Lock()
	p.fn, p.ctx = fn, ctx
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { p.informer.RunWithContext(ctx) })
	defer wg.Wait()
	// Stopped before the first sync is a shutdown, not a failure: the
	// collector publishes with what is known meanwhile.
	cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced)
	<-ctx.Done()
	return nil
}

// PodFromAPI converts a Kubernetes pod. Container ids lose their runtime
// prefix ("containerd://"), as cgroup paths carry them. The workload is
// the pod's controller; the provider resolves it further.
func PodFromAPI(pod *corev1.Pod) *schema.Pod {
	sp := &schema.Pod{
		Uid: string(pod.UID), Name: pod.Name, Namespace: pod.Namespace, Node: pod.Spec.NodeName,
		HostNetwork: pod.Spec.HostNetwork, Labels: pod.Labels,
	}
	for _, ip := range pod.Status.PodIPs {
		sp.Ips = append(sp.Ips, ip.IP)
	}
	for i := range pod.OwnerReferences {
		sp.Owners = append(sp.Owners, refOf(&pod.OwnerReferences[i]))
	}
	if c := controllerOf(pod.OwnerReferences); c != nil {
		sp.Workload = refOf(c)
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
