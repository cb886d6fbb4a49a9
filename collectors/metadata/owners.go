package metadata

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"

	"github.com/weftobs/weft/streams/schema"
)

// The owners a pod's controller may itself have a controller through:
// Deployments own pods through ReplicaSets, CronJobs through Jobs. Every
// other controller (StatefulSet, DaemonSet, an operator's own kind) owns
// its pods directly and is its own top.
var ownerResources = map[string]k8sschema.GroupVersionResource{
	"apps/ReplicaSet": {Group: "apps", Version: "v1", Resource: "replicasets"},
	"batch/Job":       {Group: "batch", Version: "v1", Resource: "jobs"},
}

// ownerLookupTimeout bounds one owner look-up, made from the informer's
// handler: a slow API server delays the next pod event, never forever.
const ownerLookupTimeout = 5 * time.Second

// owners resolves a pod's controller to its top controller by reading,
// lazily and once per controller, the metadata of the ReplicaSet or Job
// that owns it (RBAC: get replicasets, get jobs; no list, no watch).
//
// Why not informers on ReplicaSets and Jobs: a collector runs on every
// node, and those informers would hold every ReplicaSet and Job of the
// cluster (a Deployment keeps ten old ReplicaSets) on each of them, and
// need list and watch cluster-wide. A node's pods name a few dozen
// controllers, which change only when a controller is created: one GET of
// its metadata (PartialObjectMetadata, not the whole object) when the
// first of its pods appears, then the cache. A controller's own
// controller reference does not change while it exists.
//
// Safe for concurrent use.
type owners struct {
	client metadata.Interface

	mu sync.Mutex
	// tops maps a controller's uid to its top controller (itself when it
	// has none); the provider forgets one with the last pod it owns.
	tops map[string]*schema.OwnerRef

	// failed counts look-ups that failed for another reason than the
	// controller being gone (forbidden, API server away): the pod is
	// published with its direct controller as the workload meanwhile and
	// resolved again at its next update or resync.
	failed atomic.Uint64
}

func newOwners(client metadata.Interface) *owners {
	return &owners{client: client, tops: map[string]*schema.OwnerRef{}}
}

// controllerOf is pod's controller owner reference, nil for a bare pod.
func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	return nil
}

func refOf(o *metav1.OwnerReference) *schema.OwnerRef {
	return &schema.OwnerRef{Kind: o.Kind, Name: o.Name, Uid: string(o.UID), Controller: o.Controller != nil && *o.Controller}
}

// top returns the top controller of a pod in namespace ns whose
// controller is ctrl (nil: a bare pod, no workload).
func (o *owners) top(ctx context.Context, ns string, ctrl *metav1.OwnerReference) *schema.OwnerRef {
	if ctrl == nil {
		return nil
	}
	gv, err := k8sschema.ParseGroupVersion(ctrl.APIVersion)
	if err != nil {
		return refOf(ctrl)
	}
	gvr, ok := ownerResources[gv.Group+"/"+ctrl.Kind]
	if !ok || o == nil || o.client == nil {
		return refOf(ctrl)
	}
	uid := string(ctrl.UID)
	o.mu.Lock()
	top := o.tops[uid]
	o.mu.Unlock()
	if top != nil {
		return top
	}

	ctx, cancel := context.WithTimeout(ctx, ownerLookupTimeout)
	defer cancel()
	m, err := o.client.Resource(gvr).Namespace(ns).Get(ctx, ctrl.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), err == nil && m.UID != ctrl.UID:
		// Gone (or a new one by the same name): what the pod names is all
		// there is to know.
		top = refOf(ctrl)
	case err != nil:
		o.failed.Add(1)
		return refOf(ctrl)
	default:
		top = refOf(ctrl)
		if up := controllerOf(m.OwnerReferences); up != nil {
			top = refOf(up)
		}
	}
	o.mu.Lock()
	o.tops[uid] = top
	o.mu.Unlock()
	return top
}

// forget drops what is known of the controller uid.
func (o *owners) forget(uid string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	delete(o.tops, uid)
	o.mu.Unlock()
}
