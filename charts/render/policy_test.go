package render

import (
	"crypto/tls"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

// The policies below hold for every render case: they are what the issue
// promises about the chart's output (secure by default, one workload per
// stage, exactly the flows the topology needs), checked on the decoded
// objects rather than on template text.

// rendered is a render case with what the policies need.
type rendered struct {
	renderCase
	objs []object
	top  *topology.Topology
}

func renderAll(t *testing.T) []rendered {
	t.Helper()
	var out []rendered
	for _, c := range renderCases(t) {
		_, objs := c.render(t)
		out = append(out, rendered{renderCase: c, objs: objs, top: topologyOf(t, objs)})
	}
	return out
}

// kindsForParse registers every stage kind the examples use, with every
// deploy mode: the binary's parser checks the document's structure here;
// which modes a kind may use is the chart's own check (values_test.go).
func kindsForParse() *stage.Registry {
	src := map[string]bool{"collector": true, "synthetic": true}
	sink := map[string]bool{"graph": true, "otlp": true, "sink": true}
	reg := stage.NewRegistry()
	for _, k := range []string{"collector", "synthetic", "sink", "correlator", "graph", "otlp"} {
		reg.Register(stage.NotImplemented(k, "test", stage.DeployModes, src[k], sink[k]))
	}
	return reg
}

// topologyOf parses the topology ConfigMap with the binary's own parser:
// what the pods read must be a topology `weft run` accepts.
func topologyOf(t *testing.T, objs []object) *topology.Topology {
	t.Helper()
	for _, cm := range ofType[*corev1.ConfigMap](objs) {
		if data, ok := cm.Data["topology.yaml"]; ok {
			top, err := topology.Parse(cm.Name+"/topology.yaml", []byte(data), kindsForParse())
			if err != nil {
				t.Fatalf("the topology ConfigMap does not parse as weft parses it: %v", err)
			}
			return top
		}
	}
	t.Fatal("no ConfigMap holds topology.yaml")
	return nil
}

func ofType[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// pod is the pod template of a workload.
type pod struct {
	kind, name string
	labels     map[string]string
	spec       corev1.PodSpec
}

func (p pod) String() string { return p.kind + "/" + p.name }

func pods(objs []object) []pod {
	var out []pod
	for _, o := range objs {
		var tpl corev1.PodTemplateSpec
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			tpl = v.Spec.Template
		case *appsv1.DaemonSet:
			tpl = v.Spec.Template
		case *appsv1.StatefulSet:
			tpl = v.Spec.Template
		case *batchv1.Job:
			tpl = v.Spec.Template
		default:
			continue
		}
		out = append(out, pod{kind: o.GVK.Kind, name: o.Meta.GetName(), labels: tpl.Labels, spec: tpl.Spec})
	}
	return out
}

// stagesOf returns the stages a container runs (its --stage argument).
func stagesOf(c corev1.Container) []string {
	for i, a := range c.Args {
		if a == "--stage" && i+1 < len(c.Args) {
			return strings.Split(c.Args[i+1], ",")
		}
	}
	return nil
}

func isCollector(top *topology.Topology, c corev1.Container) bool {
	for _, n := range stagesOf(c) {
		if s := top.Stage(n); s != nil && s.Kind == "collector" {
			return true
		}
	}
	return false
}

func hasCollector(top *topology.Topology, p pod) bool {
	return slices.ContainsFunc(p.spec.Containers, func(c corev1.Container) bool { return isCollector(top, c) })
}

func TestCollectorPods(t *testing.T) {
	wantCaps := []corev1.Capability{"BPF", "PERFMON"}
	// Host paths the collector reads, where it sees them, and whether the
	// mount must be read-only.
	wantMounts := []struct {
		host, path string
		ro         bool
	}{
		{"/sys/kernel/btf", "/sys/kernel/btf", true},
		{"/proc", "/host/proc", true},
		{"/sys/fs/cgroup", "/host/sys/fs/cgroup", true},
	}
	seen := 0
	for _, r := range renderAll(t) {
		for _, p := range pods(r.objs) {
			if !hasCollector(r.top, p) {
				continue
			}
			seen++
			t.Run(r.name+"/"+p.String(), func(t *testing.T) {
				if p.kind != "DaemonSet" {
					t.Errorf("a collector runs in a DaemonSet, not a %s", p.kind)
				}
				if !p.spec.HostPID {
					t.Error("hostPID is off: the collector cannot resolve host pids")
				}
				if !slices.ContainsFunc(p.spec.Tolerations, func(tl corev1.Toleration) bool {
					return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
				}) {
					t.Errorf("tolerations %v do not tolerate every taint: some nodes get no collector", p.spec.Tolerations)
				}
				hostPaths := map[string]string{}
				for _, v := range p.spec.Volumes {
					if v.HostPath != nil {
						hostPaths[v.Name] = v.HostPath.Path
					}
				}
				for _, c := range p.spec.Containers {
					// Guaranteed QoS needs requests == limits for CPU and
					// memory in every container of the pod.
					for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
						if req.IsZero() || req.Cmp(lim) != 0 {
							t.Errorf("container %s: %s request %s != limit %s: the pod is not Guaranteed", c.Name, res, req.String(), lim.String())
						}
					}
					if !hasNodeNameEnv(c) {
						t.Errorf("container %s: no WEFT_NODE_NAME from spec.nodeName", c.Name)
					}
					if !isCollector(r.top, c) {
						checkRestrictedContainer(t, c, nil, false)
						continue
					}
					sc := c.SecurityContext
					if sc == nil || sc.Capabilities == nil {
						t.Fatalf("container %s: no capabilities set", c.Name)
					}
					if sc.Privileged != nil && *sc.Privileged {
						t.Errorf("container %s is privileged by default", c.Name)
					}
					if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
						t.Errorf("container %s drops %v, want ALL", c.Name, sc.Capabilities.Drop)
					}
					if got := slices.Sorted(slices.Values(sc.Capabilities.Add)); !slices.Equal(got, wantCaps) {
						t.Errorf("container %s adds capabilities %v, want exactly %v", c.Name, got, wantCaps)
					}
					if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("container %s allows privilege escalation", c.Name)
					}
					if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("container %s: root filesystem is writable", c.Name)
					}
					// weft pins nothing and attaches to BTF tracepoints:
					// no bpffs, no tracefs, and no host path written.
					for _, m := range c.VolumeMounts {
						if _, host := hostPaths[m.Name]; host && !m.ReadOnly {
							t.Errorf("container %s: host path %s mounted read-write at %s", c.Name, hostPaths[m.Name], m.MountPath)
						}
						for _, no := range []string{"/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/debug"} {
							if strings.HasPrefix(m.MountPath, no) || strings.HasPrefix(hostPaths[m.Name], no) {
								t.Errorf("container %s mounts %s (host %q): the collector needs neither bpffs nor tracefs", c.Name, m.MountPath, hostPaths[m.Name])
							}
						}
					}
					for _, w := range wantMounts {
						i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == w.path })
						if i < 0 {
							t.Errorf("container %s: %s not mounted", c.Name, w.path)
							continue
						}
						m := c.VolumeMounts[i]
						if hostPaths[m.Name] != w.host {
							t.Errorf("container %s: %s comes from host path %q, want %q", c.Name, w.path, hostPaths[m.Name], w.host)
						}
						if m.ReadOnly != w.ro {
							t.Errorf("container %s: %s readOnly=%v, want %v", c.Name, w.path, m.ReadOnly, w.ro)
						}
					}
				}
			})
		}
	}
	if seen == 0 {
		t.Fatal("no render case has a collector pod: the test checks nothing")
	}
}

func hasNodeNameEnv(c corev1.Container) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "WEFT_NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	})
}

func TestCollectorPrivilegedOptIn(t *testing.T) {
	for _, privileged := range []bool{false, true} {
		t.Run(fmt.Sprint("privileged=", privileged), func(t *testing.T) {
			out, err := Render(nil, Options{Values: map[string]any{
				"neo4j": externalNeo4j, "otlp": otlpEndpoint,
				"collector": map[string]any{"privileged": privileged},
			}})
			if err != nil {
				t.Fatal(err)
			}
			objs := decode(t, out)
			top := topologyOf(t, objs)
			n := 0
			for _, p := range pods(objs) {
				for _, c := range p.spec.Containers {
					if !isCollector(top, c) {
						continue
					}
					n++
					got := c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
					if got != privileged {
						t.Errorf("%s/%s: privileged=%v, want %v", p, c.Name, got, privileged)
					}
				}
			}
			if n == 0 {
				t.Fatal("no collector container")
			}
		})
	}
}

// TestCollectorCapabilities checks that collector.capabilities is the
// whole list the collector container gets: one can be added (SYS_RESOURCE
// for kernels before 5.11) or removed, every other one stays dropped.
func TestCollectorCapabilities(t *testing.T) {
	tests := []struct {
		name string
		caps []any // nil: the default
		want []corev1.Capability
	}{
		{"default", nil, []corev1.Capability{"BPF", "PERFMON"}},
		{"kernel before 5.11", []any{"BPF", "PERFMON", "SYS_RESOURCE"}, []corev1.Capability{"BPF", "PERFMON", "SYS_RESOURCE"}},
		{"SYS_ADMIN instead", []any{"SYS_ADMIN"}, []corev1.Capability{"SYS_ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := map[string]any{}
			if tt.caps != nil {
				vals["collector"] = map[string]any{"capabilities": tt.caps}
			}
			for _, top := range [][]byte{nil, example(t, "sidecar")} {
				var spec []corev1.Container
				if top == nil {
					out, err := Render(nil, Options{Values: vals})
					if err != nil {
						t.Fatal(err)
					}
					objs := decode(t, out)
					for _, p := range pods(objs) {
						for _, c := range p.spec.Containers {
							if isCollector(topologyOf(t, objs), c) {
								spec = append(spec, c)
							}
						}
					}
				} else {
					vals["otlp"] = otlpEndpoint
					out, err := RenderSidecar(top, "collector", Options{Values: vals})
					if err != nil {
						t.Fatal(err)
					}
					var ps corev1.PodSpec
					if err := yaml.UnmarshalStrict([]byte(out), &ps); err != nil {
						t.Fatal(err)
					}
					spec = ps.Containers
				}
				if len(spec) == 0 {
					t.Fatal("no collector container")
				}
				for _, c := range spec {
					if got := c.SecurityContext.Capabilities.Add; !slices.Equal(got, tt.want) {
						t.Errorf("%s: capabilities %v, want %v", c.Name, got, tt.want)
					}
					if !slices.Equal(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) {
						t.Errorf("%s: drops %v, want ALL", c.Name, c.SecurityContext.Capabilities.Drop)
					}
				}
			}
		})
	}
}

// checkRestrictedContainer checks the restricted Pod Security profile
// for one container, with the pod's context for what may be set there;
// rootFSWritable names the one documented exception.
func checkRestrictedContainer(t *testing.T, c corev1.Container, psc *corev1.PodSecurityContext, rootFSWritable bool) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("container %s: no securityContext", c.Name)
		return
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && psc != nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("container %s: runAsNonRoot is not true", c.Name)
	}
	if uid := sc.RunAsUser; uid != nil && *uid == 0 {
		t.Errorf("container %s runs as uid 0", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s is privileged", c.Name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container %s: capabilities %+v, want drop [ALL] and nothing added", c.Name, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && psc != nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container %s: seccomp profile %+v, want RuntimeDefault", c.Name, seccomp)
	}
	if !rootFSWritable && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem) {
		t.Errorf("container %s: root filesystem is writable", c.Name)
	}
}

func TestOtherPodsRestricted(t *testing.T) {
	seen := 0
	for _, r := range renderAll(t) {
		for _, p := range pods(r.objs) {
			if hasCollector(r.top, p) {
				continue
			}
			seen++
			t.Run(r.name+"/"+p.String(), func(t *testing.T) {
				s := p.spec
				if s.HostPID || s.HostNetwork || s.HostIPC {
					t.Error("uses a host namespace")
				}
				for _, v := range s.Volumes {
					if v.HostPath != nil {
						t.Errorf("volume %s is a hostPath", v.Name)
					}
				}
				for _, c := range slices.Concat(s.InitContainers, s.Containers) {
					// The evaluation Neo4j's entrypoint writes its config
					// into the image; documented in the template and README.
					writable := p.labels["app.kubernetes.io/component"] == "neo4j" && c.Name == "neo4j"
					checkRestrictedContainer(t, c, s.SecurityContext, writable)
				}
			})
		}
	}
	if seen == 0 {
		t.Fatal("no pod checked")
	}
}

func TestEveryWorkload(t *testing.T) {
	for _, r := range renderAll(t) {
		sas := map[string]*corev1.ServiceAccount{}
		for _, sa := range ofType[*corev1.ServiceAccount](r.objs) {
			sas[sa.Name] = sa
		}
		policies := ofType[*networkingv1.NetworkPolicy](r.objs)
		for _, p := range pods(r.objs) {
			t.Run(r.name+"/"+p.String(), func(t *testing.T) {
				for _, c := range p.spec.Containers {
					for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						if _, ok := c.Resources.Requests[res]; !ok {
							t.Errorf("container %s: no %s request", c.Name, res)
						}
						if _, ok := c.Resources.Limits[res]; !ok {
							t.Errorf("container %s: no %s limit", c.Name, res)
						}
					}
					if p.kind == "Job" {
						continue // runs to completion; nothing to probe
					}
					if c.ReadinessProbe == nil || c.LivenessProbe == nil {
						t.Errorf("container %s: readiness %v, liveness %v: want both", c.Name, c.ReadinessProbe != nil, c.LivenessProbe != nil)
						continue
					}
					if len(stagesOf(c)) > 0 {
						if g := c.ReadinessProbe.HTTPGet; g == nil || g.Path != "/readyz" {
							t.Errorf("container %s: readiness probe is not GET /readyz", c.Name)
						}
						if g := c.LivenessProbe.HTTPGet; g == nil || g.Path != "/healthz" {
							t.Errorf("container %s: liveness probe is not GET /healthz", c.Name)
						}
					}
				}
				sa := p.spec.ServiceAccountName
				if sa == "" || sa == "default" {
					t.Errorf("service account %q: want the workload's own", sa)
				} else if sas[sa] == nil {
					t.Errorf("service account %s is not rendered", sa)
				}
				var deny, allow bool
				for _, np := range policies {
					sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					if !sel.Matches(labels.Set(p.labels)) {
						continue
					}
					if len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 && len(np.Spec.PolicyTypes) == 2 {
						deny = true
					} else {
						allow = true
					}
				}
				if !deny {
					t.Error("no default-deny NetworkPolicy selects it")
				}
				if !allow {
					t.Error("no NetworkPolicy of its own selects it")
				}
			})
		}
	}
}

// TestRBACReadOnly checks the roles grant exactly what the code reads:
// the collector's metadata provider lists and watches pods (an informer)
// and gets ReplicaSets and Jobs (collectors/metadata, owners.go); no other
// stage reads the Kubernetes API.
func TestRBACReadOnly(t *testing.T) {
	want := map[string][]string{
		"collector": {"/pods:list,watch", "apps/replicasets:get", "batch/jobs:get"},
	}
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			roles := map[string]*rbacv1.ClusterRole{}
			for _, cr := range ofType[*rbacv1.ClusterRole](r.objs) {
				roles[cr.Name] = cr
				var resources []string
				for _, rule := range cr.Rules {
					for _, v := range rule.Verbs {
						if v != "get" && v != "list" && v != "watch" {
							t.Errorf("ClusterRole %s grants %q: only get, list, watch", cr.Name, v)
						}
					}
					// The one non-resource rule: weft nats-auth reads the
					// service-account issuer keys to verify stages' tokens.
					jwks := slices.Equal(rule.NonResourceURLs, []string{"/openid/v1/jwks"}) && len(rule.Resources) == 0 && cr.Labels["app.kubernetes.io/component"] == "nats"
					if slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") || (len(rule.NonResourceURLs) > 0 && !jwks) {
						t.Errorf("ClusterRole %s has a wildcard or non-resource rule: %+v", cr.Name, rule)
					}
					for _, g := range rule.APIGroups {
						for _, res := range rule.Resources {
							resources = append(resources, g+"/"+res+":"+strings.Join(slices.Sorted(slices.Values(rule.Verbs)), ","))
						}
					}
				}
				role := cr.Labels["app.kubernetes.io/component"]
				for k, w := range want {
					if strings.Contains(cr.Name, "-"+k+"-") {
						role = k
						if got := slices.Sorted(slices.Values(resources)); !slices.Equal(got, w) {
							t.Errorf("ClusterRole %s reads %v, want %v", cr.Name, got, w)
						}
					}
				}
				if role == "" {
					t.Errorf("ClusterRole %s is for no known component", cr.Name)
				}
			}
			for _, role := range ofType[*rbacv1.Role](r.objs) {
				if role.Labels["app.kubernetes.io/component"] != "operator" {
					t.Errorf("Role %s is rendered; only the operator's is checked (TestOperatorIdentity)", role.Name)
				}
			}
			for _, b := range ofType[*rbacv1.ClusterRoleBinding](r.objs) {
				if roles[b.RoleRef.Name] == nil {
					t.Errorf("ClusterRoleBinding %s binds %s, which the chart does not render", b.Name, b.RoleRef.Name)
				}
			}
			// A workload with a token must be one that has a binding.
			bound := map[string]bool{}
			for _, b := range ofType[*rbacv1.ClusterRoleBinding](r.objs) {
				for _, s := range b.Subjects {
					bound[s.Name] = true
				}
			}
			for _, p := range pods(r.objs) {
				token := p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken
				for _, v := range p.spec.Volumes {
					// A projected token for the API server (no audience) in
					// one container only: weft nats-auth's.
					if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
						return s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == ""
					}) {
						token = true
					}
				}
				if token != bound[p.spec.ServiceAccountName] {
					t.Errorf("%s: token mounted=%v but bound=%v: mount the token exactly where the API is read", p, token, bound[p.spec.ServiceAccountName])
				}
			}
		})
	}
}

// TestOneWorkloadPerStage checks the chart and the topology agree: every
// stage runs in exactly one container (or is printed for the users' pods),
// from the topology the ConfigMap carries, on the port it listens on.
func TestOneWorkloadPerStage(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			runs := map[string]string{}
			for _, p := range pods(r.objs) {
				for _, c := range p.spec.Containers {
					st := stagesOf(c)
					if len(st) == 0 {
						continue
					}
					for _, n := range st {
						if prev, dup := runs[n]; dup {
							t.Errorf("stage %s runs in %s and in %s/%s", n, prev, p, c.Name)
						}
						runs[n] = p.String() + "/" + c.Name
					}
					checkStageContainer(t, p, c)
				}
			}
			for _, s := range r.top.Stages {
				_, ok := runs[s.Name]
				app := s.Deploy == stage.DeploySidecar && s.SidecarOf == topology.AppSidecar
				if ok == app {
					t.Errorf("stage %s (deploy %s, sidecarOf %q): runs in the cluster=%v", s.Name, s.Deploy, s.SidecarOf, ok)
				}
				if w, ok := runs[s.Name]; ok {
					wantKind := map[stage.DeployMode]string{stage.DeployDaemonSet: "DaemonSet", stage.DeployDeployment: "Deployment", stage.DeployStatefulSet: "StatefulSet"}[s.Deploy]
					if s.Deploy == stage.DeploySidecar {
						wantKind = strings.Split(runs[s.SidecarOf], "/")[0]
					}
					if s.Deploy != stage.DeployInProcess && !strings.HasPrefix(w, wantKind+"/") {
						t.Errorf("stage %s (deploy %s) runs in %s, want a %s", s.Name, s.Deploy, w, wantKind)
					}
				}
			}
			for n := range runs {
				if r.top.Stage(n) == nil {
					t.Errorf("a container runs stage %s, which the topology lacks", n)
				}
			}
		})
	}
}

func checkStageContainer(t *testing.T, p pod, c corev1.Container) {
	t.Helper()
	args := strings.Join(c.Args, " ")
	if c.Args[0] != "run" || !strings.Contains(args, "-f /etc/weft/topology.yaml") {
		t.Errorf("%s/%s: args %q: want run -f /etc/weft/topology.yaml", p, c.Name, args)
	}
	port := 0
	if len(c.Ports) == 1 {
		port = int(c.Ports[0].ContainerPort)
	}
	if !strings.Contains(args, "--listen 0.0.0.0:"+strconv.Itoa(port)) {
		t.Errorf("%s/%s: args %q do not listen on 0.0.0.0 at its port %d", p, c.Name, args, port)
	}
	mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		if m.MountPath != "/etc/weft" {
			return false
		}
		return slices.ContainsFunc(p.spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == m.Name && v.ConfigMap != nil && strings.HasSuffix(v.ConfigMap.Name, "-topology")
		})
	})
	if !mounted {
		t.Errorf("%s/%s: the topology ConfigMap is not mounted at /etc/weft", p, c.Name)
	}
	for _, e := range c.Env {
		if e.Name == "WEFT_NATS_URL" {
			return
		}
	}
	t.Errorf("%s/%s: no WEFT_NATS_URL", p, c.Name)
}

func TestScalingAndDisruption(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			hpas := map[string]*autoscalingv2.HorizontalPodAutoscaler{}
			for _, h := range ofType[*autoscalingv2.HorizontalPodAutoscaler](r.objs) {
				hpas[h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] = h
			}
			pdbs := ofType[*policyv1.PodDisruptionBudget](r.objs)
			check := func(kind, name string, replicas *int32, tpl corev1.PodTemplateSpec) {
				if tpl.Labels["app.kubernetes.io/component"] == "neo4j" {
					return // one evaluation server: nothing to spread or keep available
				}
				covered := slices.ContainsFunc(pdbs, func(b *policyv1.PodDisruptionBudget) bool {
					sel, _ := metav1.LabelSelectorAsSelector(b.Spec.Selector)
					return sel.Matches(labels.Set(tpl.Labels))
				})
				if !covered {
					t.Errorf("%s/%s: no PodDisruptionBudget", kind, name)
				}
				zones := slices.ContainsFunc(tpl.Spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
					return c.TopologyKey == "topology.kubernetes.io/zone"
				})
				if !zones {
					t.Errorf("%s/%s: not spread across zones", kind, name)
				}
				var st *topology.Stage
				for _, c := range tpl.Spec.Containers {
					if n := stagesOf(c); len(n) == 1 {
						st = r.top.Stage(n[0])
					}
					break
				}
				if st == nil {
					return // NATS, Neo4j, or several stages in process
				}
				h := hpas[kind+"/"+name]
				switch {
				case st.Autoscale != nil && h == nil:
					t.Errorf("%s/%s: stage %s autoscales but has no HorizontalPodAutoscaler", kind, name, st.Name)
				case st.Autoscale != nil:
					if h.Spec.MinReplicas == nil || int(*h.Spec.MinReplicas) != st.Autoscale.Min || int(h.Spec.MaxReplicas) != st.Autoscale.Max {
						t.Errorf("%s/%s: HPA %v–%d, want %d–%d", kind, name, h.Spec.MinReplicas, h.Spec.MaxReplicas, st.Autoscale.Min, st.Autoscale.Max)
					}
					if replicas != nil {
						t.Errorf("%s/%s: sets replicas under an HPA (every upgrade would reset the scale)", kind, name)
					}
				case h != nil:
					t.Errorf("%s/%s: has an HPA but stage %s does not autoscale", kind, name, st.Name)
				default:
					want := max(st.Replicas, 1)
					if replicas == nil || int(*replicas) != want {
						t.Errorf("%s/%s: replicas %v, want %d", kind, name, replicas, want)
					}
				}
			}
			for _, d := range ofType[*appsv1.Deployment](r.objs) {
				check("Deployment", d.Name, d.Spec.Replicas, d.Spec.Template)
			}
			for _, s := range ofType[*appsv1.StatefulSet](r.objs) {
				check("StatefulSet", s.Name, s.Spec.Replicas, s.Spec.Template)
			}
		})
	}
}

// egressPorts lists "port → peers" for every egress rule of the policies
// selecting p, "*" for any destination.
func egressPorts(t *testing.T, objs []object, p pod) map[int][]string {
	t.Helper()
	out := map[int][]string{}
	for _, np := range ofType[*networkingv1.NetworkPolicy](objs) {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(p.labels)) {
			continue
		}
		for _, rule := range np.Spec.Egress {
			peers := []string{"*"}
			if len(rule.To) > 0 {
				peers = nil
				for _, to := range rule.To {
					peers = append(peers, peerString(to))
				}
			}
			for _, port := range rule.Ports {
				out[port.Port.IntValue()] = append(out[port.Port.IntValue()], peers...)
			}
		}
	}
	return out
}

func peerString(p networkingv1.NetworkPolicyPeer) string {
	var parts []string
	if p.PodSelector != nil {
		parts = append(parts, "pods:"+metav1.FormatLabelSelector(p.PodSelector))
	}
	if p.NamespaceSelector != nil {
		parts = append(parts, "namespaces:"+metav1.FormatLabelSelector(p.NamespaceSelector))
	}
	if p.IPBlock != nil {
		parts = append(parts, "cidr:"+p.IPBlock.CIDR)
	}
	return strings.Join(parts, ",")
}

func TestNetworkFlows(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			chartNATS := len(ofType[*appsv1.StatefulSet](r.objs)) > 0 && slices.ContainsFunc(ofType[*appsv1.StatefulSet](r.objs), func(s *appsv1.StatefulSet) bool {
				return s.Spec.Template.Labels["app.kubernetes.io/component"] == "nats"
			})
			for _, p := range pods(r.objs) {
				comp := p.labels["app.kubernetes.io/component"]
				if comp == "nats" || comp == "neo4j" || comp == "migrate" {
					continue
				}
				eg := egressPorts(t, r.objs, p)
				allowed := map[int]bool{53: true, 4222: true}
				if len(eg[4222]) == 0 {
					t.Errorf("%s: no egress to NATS", p)
				} else if chartNATS && !strings.Contains(eg[4222][0], "app.kubernetes.io/component=nats") {
					t.Errorf("%s: NATS egress to %v, want the chart's NATS pods", p, eg[4222])
				}
				kinds := map[string]bool{}
				for _, c := range p.spec.Containers {
					for _, n := range stagesOf(c) {
						if s := r.top.Stage(n); s != nil {
							kinds[s.Kind] = true
							if s.Kind == "graph" && storeOf(s) == "neo4j" {
								allowed[7687] = true
								if len(eg[7687]) == 0 {
									t.Errorf("%s: graph stage %s has no egress to Neo4j", p, n)
								}
							}
						}
					}
					for _, e := range c.Env {
						if e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
							port := endpointPort(e.Value)
							allowed[port] = true
							if len(eg[port]) == 0 {
								t.Errorf("%s: no egress to the OTLP endpoint %s (port %d)", p, e.Value, port)
							}
						}
					}
				}
				if kinds["collector"] || kinds["correlator"] {
					allowed[443], allowed[6443] = true, true
				}
				for port, peers := range eg {
					if !allowed[port] {
						t.Errorf("%s: egress to port %d (%v) is a flow the topology does not need", p, port, peers)
					}
				}
				// Ingress: only the stage's HTTP ports (metrics), only from
				// the configured Prometheus peers.
				for _, np := range ofType[*networkingv1.NetworkPolicy](r.objs) {
					sel, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
					if !sel.Matches(labels.Set(p.labels)) {
						continue
					}
					for _, rule := range np.Spec.Ingress {
						if len(rule.From) == 0 {
							t.Errorf("%s: ingress from anywhere in %s", p, np.Name)
						}
						for _, port := range rule.Ports {
							if n := port.Port.IntValue(); n < 7680 || n > 7690 {
								t.Errorf("%s: ingress on port %d", p, n)
							}
						}
					}
				}
			}
		})
	}
}

func storeOf(s *topology.Stage) string {
	var cfg struct {
		Store string `yaml:"store"`
	}
	_ = s.RawConfig.Decode(&cfg)
	return cfg.Store
}

func endpointPort(u string) int {
	rest := u[strings.Index(u, "://")+3:]
	if i := strings.IndexAny(rest, "/"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		n, _ := strconv.Atoi(rest[i+1:])
		return n
	}
	if strings.HasPrefix(u, "https") {
		return 443
	}
	return 80
}

func TestNATS(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			external, _ := valueAt(r.opts.Values, "nats", "url").(string)
			var sts *appsv1.StatefulSet
			for _, s := range ofType[*appsv1.StatefulSet](r.objs) {
				if s.Spec.Template.Labels["app.kubernetes.io/component"] == "nats" {
					sts = s
				}
			}
			for _, p := range pods(r.objs) {
				for _, c := range p.spec.Containers {
					for _, e := range c.Env {
						if e.Name == "WEFT_NATS_URL" && external != "" && e.Value != external {
							t.Errorf("%s/%s: WEFT_NATS_URL %s, want the external %s", p, c.Name, e.Value, external)
						}
					}
				}
			}
			if external != "" {
				if sts != nil {
					t.Error("nats.url is set, yet the chart runs NATS")
				}
				return
			}
			if sts == nil {
				t.Fatal("no NATS StatefulSet")
			}
			if *sts.Spec.Replicas != 3 || len(sts.Spec.VolumeClaimTemplates) != 1 {
				t.Errorf("NATS: %d replicas, %d claim templates; want 3 and a PVC", *sts.Spec.Replicas, len(sts.Spec.VolumeClaimTemplates))
			}
			// nats-server's own parser: the config must be one it runs,
			// with the files the pod has (certificates, the include weft
			// nats-auth keygen writes at pod start).
			t.Setenv("SERVER_NAME", sts.Name+"-0")
			pod := layOutNATSPod(t, r.objs)
			opts, err := natsserver.ProcessConfigFile(pod.conf)
			if err != nil {
				conf, _ := os.ReadFile(pod.conf)
				t.Fatalf("nats-server rejects nats.conf: %v\n%s", err, conf)
			}
			mutual := func(c *tls.Config) bool { return c != nil && c.ClientAuth == tls.RequireAndVerifyClientCert }
			if !mutual(opts.TLSConfig) || !mutual(opts.Cluster.TLSConfig) || opts.AuthCallout == nil || opts.AuthCallout.Account != "AUTH" {
				t.Errorf("nats.conf: client mutual TLS=%v, route mutual TLS=%v, auth callout %+v; want mutual TLS on both and weft nats-auth's callout",
					mutual(opts.TLSConfig), mutual(opts.Cluster.TLSConfig), opts.AuthCallout)
			}
			if !opts.JetStream || opts.StoreDir != "/data" || len(opts.Routes) != 3 || opts.Cluster.Port != 6222 {
				t.Errorf("nats.conf: jetstream=%v store=%q routes=%d cluster port=%d; want JetStream on /data, 3 routes on 6222",
					opts.JetStream, opts.StoreDir, len(opts.Routes), opts.Cluster.Port)
			}
			if sts.Spec.VolumeClaimTemplates[0].Name != "data" || !slices.ContainsFunc(sts.Spec.Template.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == "data" && m.MountPath == opts.StoreDir
			}) {
				t.Error("the JetStream store dir is not on the PVC")
			}
			checkNATSPod(t, sts, 3)
		})
	}
}

// checkNATSPod checks the NATS pod template for a cluster of n servers:
// readiness on this server's JetStream only, probe timeouts a small node
// can meet, and for n >= 3 one server per node.
func checkNATSPod(t *testing.T, sts *appsv1.StatefulSet, n int) {
	t.Helper()
	c := sts.Spec.Template.Spec.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz?js-server-only=true" || p.HTTPGet.Port.String() != "monitor" {
		t.Errorf("NATS readiness probe %+v, want GET /healthz?js-server-only=true on the monitor port", p)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.TimeoutSeconds < 3 {
			t.Errorf("NATS %s probe %+v: timeoutSeconds under 3 fails on a small, busy node", name, p)
		}
	}
	aff := sts.Spec.Template.Spec.Affinity
	var terms []corev1.PodAffinityTerm
	if aff != nil && aff.PodAntiAffinity != nil {
		terms = aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	}
	spread := slices.ContainsFunc(terms, func(term corev1.PodAffinityTerm) bool {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		return err == nil && term.TopologyKey == "kubernetes.io/hostname" && sel.Matches(labels.Set(sts.Spec.Template.Labels))
	})
	if want := n >= 3; spread != want {
		t.Errorf("NATS with %d servers: required anti-affinity across nodes is %v, want %v (%+v)", n, spread, want, aff)
	}
}

func TestNATSStorageAndSpread(t *testing.T) {
	tests := []struct {
		name     string
		nats     map[string]any
		servers  int
		emptyDir bool
	}{
		{"three servers on PVCs", map[string]any{}, 3, false},
		{"one server in an emptyDir", map[string]any{"replicas": 1, "storage": map[string]any{"size": "2Gi", "emptyDir": true}}, 1, true},
		{"three servers in emptyDirs", map[string]any{"storage": map[string]any{"size": "10Gi", "emptyDir": true}}, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var top []byte
			if tt.servers < 3 {
				// Streams cannot have more replicas than there are servers.
				top = []byte("apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"]}\nstages:\n  - {name: c, kind: collector, outputs: [EVENTS]}\n")
			}
			out, err := Render(top, Options{Values: map[string]any{"nats": tt.nats}})
			if err != nil {
				t.Fatal(err)
			}
			var sts *appsv1.StatefulSet
			for _, s := range ofType[*appsv1.StatefulSet](decode(t, out)) {
				if s.Spec.Template.Labels["app.kubernetes.io/component"] == "nats" {
					sts = s
				}
			}
			if sts == nil {
				t.Fatal("no NATS StatefulSet")
			}
			checkNATSPod(t, sts, tt.servers)
			i := slices.IndexFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "data" })
			if tt.emptyDir {
				if len(sts.Spec.VolumeClaimTemplates) != 0 || i < 0 || sts.Spec.Template.Spec.Volumes[i].EmptyDir == nil {
					t.Fatalf("nats.storage.emptyDir: want the data volume an emptyDir and no PVC; volumes %+v, claims %d", sts.Spec.Template.Spec.Volumes, len(sts.Spec.VolumeClaimTemplates))
				}
				size := valueAt(tt.nats, "storage", "size").(string)
				if l := sts.Spec.Template.Spec.Volumes[i].EmptyDir.SizeLimit; l == nil || l.String() != size {
					t.Errorf("emptyDir sizeLimit %v, want nats.storage.size %s", l, size)
				}
			} else if len(sts.Spec.VolumeClaimTemplates) != 1 || i >= 0 {
				t.Errorf("want the data volume from a PVC: %d claims, data volume in the pod: %v", len(sts.Spec.VolumeClaimTemplates), i >= 0)
			}
		})
	}
}

func TestNeo4jAndMigrations(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			neo := slices.ContainsFunc(r.top.Stages, func(s *topology.Stage) bool { return s.Kind == "graph" && storeOf(s) == "neo4j" })
			for _, p := range pods(r.objs) {
				for _, c := range p.spec.Containers {
					for _, e := range c.Env {
						if strings.Contains(e.Name, "PASSWORD") && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
							t.Errorf("%s/%s: %s is not from a Secret", p, c.Name, e.Name)
						}
					}
				}
			}
			var jobs []*batchv1.Job
			for _, j := range ofType[*batchv1.Job](r.objs) {
				jobs = append(jobs, j)
			}
			if !neo {
				if len(jobs) > 0 {
					t.Error("a migrations Job without a Neo4j stage")
				}
				return
			}
			if len(jobs) != 1 {
				t.Fatalf("%d migration Jobs, want 1", len(jobs))
			}
			j := jobs[0]
			eval := strings.Contains(r.name, "evaluation")
			want := "pre-install,pre-upgrade"
			if eval {
				want = "post-install,pre-upgrade" // the evaluation server exists only after install
			}
			if got := j.Annotations["helm.sh/hook"]; got != want {
				t.Errorf("migrations hook %q, want %q", got, want)
			}
			c := j.Spec.Template.Spec.Containers[0]
			if a := strings.Join(c.Args, " "); !strings.HasPrefix(a, "migrate up --neo4j-uri ") {
				t.Errorf("migrations run %q, want migrate up --neo4j-uri …", a)
			}
			secrets := userSecrets(r.objs)
			password := valueAt(r.opts.Values, "neo4j", "password") != nil
			if password != (len(secrets) == 1) {
				t.Errorf("%d Secrets rendered; the chart creates one only from neo4j.password", len(secrets))
			}
		})
	}
}

func TestMonitoringNeedsCRDs(t *testing.T) {
	alerts := []string{"WeftConsumerLag", "WeftDLQGrowing", "WeftExportFailures", "WeftKernelEventsLost"}
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			crds := len(r.opts.APIVersions) > 0
			sms := ofType[*monitoringv1.ServiceMonitor](r.objs)
			rules := ofType[*monitoringv1.PrometheusRule](r.objs)
			if !crds {
				if len(sms)+len(rules) > 0 {
					t.Fatal("Prometheus Operator objects rendered for a cluster without its CRDs")
				}
				return
			}
			if len(rules) != 1 {
				t.Fatalf("%d PrometheusRules, want 1", len(rules))
			}
			var got []string
			for _, g := range rules[0].Spec.Groups {
				for _, rule := range g.Rules {
					got = append(got, rule.Alert)
				}
			}
			if slices.Sort(got); !slices.Equal(got, alerts) {
				t.Errorf("alerts %v, want %v", got, alerts)
			}
			services := map[string]*corev1.Service{}
			for _, s := range ofType[*corev1.Service](r.objs) {
				services[s.Name] = s
			}
			for _, p := range pods(r.objs) {
				if len(p.spec.Containers) == 0 || len(stagesOf(p.spec.Containers[0])) == 0 {
					continue
				}
				covered := slices.ContainsFunc(sms, func(sm *monitoringv1.ServiceMonitor) bool {
					sel, _ := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
					s := services[p.name]
					return s != nil && sel.Matches(labels.Set(s.Labels)) && len(sm.Spec.Endpoints) == len(s.Spec.Ports)
				})
				if !covered {
					t.Errorf("%s: no ServiceMonitor scrapes every port of its Service", p)
				}
			}
		})
	}
}

func TestNamesAndLabelsValid(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(r.name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, o := range r.objs {
				key := o.GVK.Kind + "/" + o.Meta.GetName()
				if seen[key] {
					t.Errorf("%s rendered twice", key)
				}
				seen[key] = true
				if errs := validation.IsDNS1123Subdomain(o.Meta.GetName()); len(errs) > 0 {
					t.Errorf("%s: name: %v", o, errs)
				}
				for _, l := range []map[string]string{o.Meta.GetLabels()} {
					for k, v := range l {
						if errs := slices.Concat(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)); len(errs) > 0 {
							t.Errorf("%s: label %s=%s: %v", o, k, v, errs)
						}
					}
				}
			}
			for _, p := range pods(r.objs) {
				names := map[string]bool{}
				for _, c := range p.spec.Containers {
					for _, port := range c.Ports {
						if errs := validation.IsValidPortName(port.Name); len(errs) > 0 {
							t.Errorf("%s/%s: port name %q: %v", p, c.Name, port.Name, errs)
						}
						if names[port.Name] {
							t.Errorf("%s: port name %s used twice in the pod", p, port.Name)
						}
						names[port.Name] = true
					}
				}
				if got := slices.Collect(maps.Keys(p.labels)); len(got) == 0 {
					t.Errorf("%s: unlabelled pods", p)
				}
			}
		})
	}
}

// valueAt returns values[k0][k1]…, or nil where a level is missing.
func valueAt(values map[string]any, keys ...string) any {
	var v any = values
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestNATSCredsFile checks an external NATS's .creds file reaches every
// stage container, in the cluster and in the users' pods.
func TestNATSCredsFile(t *testing.T) {
	opts := Options{Values: map[string]any{
		"nats":  map[string]any{"url": "tls://nats.example.com:4222", "auth": map[string]any{"existingSecret": "weft-nats", "credsKey": "weft.creds"}},
		"neo4j": externalNeo4j, "otlp": otlpEndpoint,
	}}
	out, err := Render(example(t, "sidecar"), opts)
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := RenderSidecar(example(t, "sidecar"), "collector", opts)
	if err != nil {
		t.Fatal(err)
	}
	var app corev1.PodSpec
	if err := yaml.UnmarshalStrict([]byte(snippet), &app); err != nil {
		t.Fatal(err)
	}
	specs := []pod{{kind: "snippet", name: "collector", spec: app}}
	specs = append(specs, pods(decode(t, out))...)
	n := 0
	for _, p := range specs {
		for _, c := range p.spec.Containers {
			if len(stagesOf(c)) == 0 {
				continue
			}
			n++
			env := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "WEFT_NATS_CREDS" })
			if env < 0 {
				t.Errorf("%s/%s: no WEFT_NATS_CREDS", p, c.Name)
				continue
			}
			dir, file := path.Split(c.Env[env].Value)
			i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath+"/" == dir })
			if i < 0 {
				t.Errorf("%s/%s: nothing mounted at %s", p, c.Name, dir)
				continue
			}
			v := slices.IndexFunc(p.spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[i].Name })
			if v < 0 || p.spec.Volumes[v].Secret == nil || p.spec.Volumes[v].Secret.SecretName != "weft-nats" ||
				p.spec.Volumes[v].Secret.Items[0].Key != "weft.creds" || p.spec.Volumes[v].Secret.Items[0].Path != file {
				t.Errorf("%s/%s: %s is not the Secret's weft.creds", p, c.Name, c.Env[env].Value)
			}
		}
	}
	if n < 3 {
		t.Fatalf("checked %d containers", n)
	}
}
