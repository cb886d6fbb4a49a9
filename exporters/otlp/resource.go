package otlp

import (
	"path"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/weftobs/weft/streams/schema"
)

// resourceKey identifies an endpoint's resource. Pod and container
// metadata never change for a given uid and id, so these fields suffice.
type resourceKey struct {
	node, podUID, containerID, exe string
	pid                            uint32
	withProcess                    bool
}

// resources builds and caches the OpenTelemetry resource of an endpoint:
// building one sorts and hashes its attributes, and one process makes
// thousands of calls. The cache is bounded; past maxResources it starts
// over. Safe for concurrent use.
type resources struct {
	mu    sync.Mutex
	cache map[resourceKey]*resource.Resource
	max   int
}

func newResources(max int) *resources {
	return &resources{cache: map[resourceKey]*resource.Resource{}, max: max}
}

// forEndpoint is the resource of a call endpoint: its node, pod,
// container, workload and process.
func (r *resources) forEndpoint(ep *schema.Endpoint) *resource.Resource {
	t := ep.GetTask()
	key := resourceKey{
		node: ep.GetNode(), podUID: podUID(ep.GetPod(), t), containerID: containerID(ep.GetContainer(), t),
		exe: t.GetExe() + "\x00" + t.GetComm(), pid: t.GetPid(), withProcess: true,
	}
	return r.get(key, func() []attribute.KeyValue {
		return endpointAttributes(ep.GetNode(), ep.GetPod(), ep.GetContainer(), t, true)
	})
}

// forTask is the resource of the pod (or host) a process runs in, without
// the process itself: the resource of process log records.
func (r *resources) forTask(node string, t *schema.Task, pod *schema.Pod) *resource.Resource {
	key := resourceKey{node: node, podUID: podUID(pod, t), containerID: t.GetContainerId()}
	if key.podUID == "" && key.containerID == "" {
		// A host process: its executable is all that names it.
		key.exe = t.GetExe() + "\x00" + t.GetComm()
	}
	return r.get(key, func() []attribute.KeyValue {
		var c *schema.Container
		for _, pc := range pod.GetContainers() {
			if pc.GetId() == t.GetContainerId() {
				c = pc
			}
		}
		return endpointAttributes(node, pod, c, t, false)
	})
}

func (r *resources) get(key resourceKey, attrs func() []attribute.KeyValue) *resource.Resource {
	r.mu.Lock()
	res, ok := r.cache[key]
	r.mu.Unlock()
	if ok {
		return res
	}
	res = resource.NewWithAttributes(semconv.SchemaURL, attrs()...)
	r.mu.Lock()
	if len(r.cache) >= r.max {
		clear(r.cache)
	}
	r.cache[key] = res
	r.mu.Unlock()
	return res
}

func podUID(p *schema.Pod, t *schema.Task) string {
	if p.GetUid() != "" {
		return p.GetUid()
	}
	return t.GetPodUid()
}

func containerID(c *schema.Container, t *schema.Task) string {
	if c.GetId() != "" {
		return c.GetId()
	}
	return t.GetContainerId()
}

// endpointAttributes are the resource attributes of the semantic
// conventions for what weft knows of an endpoint.
func endpointAttributes(node string, pod *schema.Pod, c *schema.Container, t *schema.Task, withProcess bool) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 16)
	if node != "" {
		attrs = append(attrs, semconv.K8SNodeName(node))
	}
	if pod != nil {
		if pod.GetNamespace() != "" {
			attrs = append(attrs, semconv.K8SNamespaceName(pod.GetNamespace()))
		}
		if pod.GetName() != "" {
			attrs = append(attrs, semconv.K8SPodName(pod.GetName()))
		}
	}
	if uid := podUID(pod, t); uid != "" {
		attrs = append(attrs, semconv.K8SPodUID(uid))
	}
	if c.GetName() != "" {
		attrs = append(attrs, semconv.K8SContainerName(c.GetName()))
	}
	if id := containerID(c, t); id != "" {
		attrs = append(attrs, semconv.ContainerID(id))
	}
	if img := c.GetImage(); img != "" {
		name, tag := splitImage(img)
		attrs = append(attrs, semconv.ContainerImageName(name))
		if tag != "" {
			attrs = append(attrs, semconv.ContainerImageTags(tag))
		}
	}
	// The pod's own controller (a ReplicaSet, a Job…) and its top
	// controller (the ReplicaSet's Deployment, the Job's CronJob), each
	// under its kind's attribute.
	names := map[string]string{}
	refs := append([]*schema.OwnerRef{}, pod.GetOwners()...)
	if w := schema.WorkloadOf(pod); w != nil {
		refs = append(refs, w)
	}
	for _, o := range refs {
		kv, ok := workloadAttribute(o.GetKind(), o.GetName())
		if !ok || names[o.GetKind()] != "" {
			continue
		}
		names[o.GetKind()] = o.GetName()
		attrs = append(attrs, kv)
		if uid, ok := workloadUIDAttribute(o.GetKind(), o.GetUid()); ok {
			attrs = append(attrs, uid)
		}
	}
	workload := ""
	for _, kind := range serviceNameKinds {
		if workload = names[kind]; workload != "" {
			break
		}
	}
	exeName := path.Base(t.GetExe())
	if t.GetExe() == "" {
		exeName = t.GetComm()
	}
	if withProcess && t != nil {
		if t.GetPid() != 0 {
			attrs = append(attrs, semconv.ProcessPID(int(t.GetPid())))
		}
		if exeName != "" {
			attrs = append(attrs, semconv.ProcessExecutableName(exeName))
		}
		if t.GetExe() != "" {
			attrs = append(attrs, semconv.ProcessExecutablePath(t.GetExe()))
		}
	}
	attrs = append(attrs, semconv.ServiceName(serviceName(workload, pod, c, exeName)))
	if pod.GetNamespace() != "" {
		attrs = append(attrs, semconv.ServiceNamespace(pod.GetNamespace()))
	}
	return attrs
}

// serviceNameKinds are the controllers whose name is service.name, in the
// order of the OpenTelemetry semantic conventions ("Populating resource
// attributes in Kubernetes": from the ancestor to the descendant).
var serviceNameKinds = []string{"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "CronJob", "Job"}

// serviceName follows the OpenTelemetry Kubernetes guidance: the
// workload's name (serviceNameKinds), else the pod's, else the
// container's; outside Kubernetes unknown_service:<executable>.
func serviceName(workload string, pod *schema.Pod, c *schema.Container, exeName string) string {
	switch {
	case workload != "":
		return workload
	case pod.GetName() != "":
		return pod.GetName()
	case c.GetName() != "":
		return c.GetName()
	case exeName != "":
		return "unknown_service:" + exeName
	}
	return "unknown_service"
}

func workloadAttribute(kind, name string) (attribute.KeyValue, bool) {
	switch kind {
	case "Deployment":
		return semconv.K8SDeploymentName(name), true
	case "ReplicaSet":
		return semconv.K8SReplicaSetName(name), true
	case "StatefulSet":
		return semconv.K8SStatefulSetName(name), true
	case "DaemonSet":
		return semconv.K8SDaemonSetName(name), true
	case "Job":
		return semconv.K8SJobName(name), true
	case "CronJob":
		return semconv.K8SCronJobName(name), true
	}
	return attribute.KeyValue{}, false
}

func workloadUIDAttribute(kind, uid string) (attribute.KeyValue, bool) {
	if uid == "" {
		return attribute.KeyValue{}, false
	}
	switch kind {
	case "Deployment":
		return semconv.K8SDeploymentUID(uid), true
	case "ReplicaSet":
		return semconv.K8SReplicaSetUID(uid), true
	case "StatefulSet":
		return semconv.K8SStatefulSetUID(uid), true
	case "DaemonSet":
		return semconv.K8SDaemonSetUID(uid), true
	case "Job":
		return semconv.K8SJobUID(uid), true
	case "CronJob":
		return semconv.K8SCronJobUID(uid), true
	}
	return attribute.KeyValue{}, false
}

// splitImage splits "registry/repo:tag" into name and tag; a digest
// (@sha256:…) stays in the name.
func splitImage(img string) (name, tag string) {
	if strings.Contains(img, "@") {
		return img, ""
	}
	slash := strings.LastIndex(img, "/")
	if colon := strings.LastIndex(img, ":"); colon > slash {
		return img[:colon], img[colon+1:]
	}
	return img, ""
}
