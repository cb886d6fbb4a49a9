package otlp

import (
	"maps"
	"testing"

	"github.com/weftobs/weft/streams/schema"
)

// TestEndpointAttributesOwners checks the workload attributes and
// service.name of pods owned as on a cluster, against the OpenTelemetry
// Kubernetes conventions: every controller in the chain under its kind's
// attribute, service.name the first of deployment, replicaset,
// statefulset, daemonset, cronjob, job, pod, container names.
func TestEndpointAttributesOwners(t *testing.T) {
	ref := func(kind, name string) *schema.OwnerRef {
		return &schema.OwnerRef{Kind: kind, Name: name, Uid: "uid-" + name, Controller: true}
	}
	tests := []struct {
		name     string
		owners   []*schema.OwnerRef
		workload *schema.OwnerRef
		want     map[string]string
	}{
		{"deployment", []*schema.OwnerRef{ref("ReplicaSet", "web-7d9f8c")}, ref("Deployment", "web"), map[string]string{
			"k8s.replicaset.name": "web-7d9f8c", "k8s.replicaset.uid": "uid-web-7d9f8c",
			"k8s.deployment.name": "web", "k8s.deployment.uid": "uid-web", "service.name": "web"}},
		{"cronjob", []*schema.OwnerRef{ref("Job", "backup-29431200")}, ref("CronJob", "backup"), map[string]string{
			"k8s.job.name": "backup-29431200", "k8s.job.uid": "uid-backup-29431200",
			"k8s.cronjob.name": "backup", "k8s.cronjob.uid": "uid-backup", "service.name": "backup"}},
		{"job", []*schema.OwnerRef{ref("Job", "migrate")}, ref("Job", "migrate"), map[string]string{
			"k8s.job.name": "migrate", "k8s.job.uid": "uid-migrate", "service.name": "migrate"}},
		{"statefulset", []*schema.OwnerRef{ref("StatefulSet", "nats")}, ref("StatefulSet", "nats"), map[string]string{
			"k8s.statefulset.name": "nats", "k8s.statefulset.uid": "uid-nats", "service.name": "nats"}},
		{"daemonset", []*schema.OwnerRef{ref("DaemonSet", "fluent-bit")}, ref("DaemonSet", "fluent-bit"), map[string]string{
			"k8s.daemonset.name": "fluent-bit", "k8s.daemonset.uid": "uid-fluent-bit", "service.name": "fluent-bit"}},
		{"replicaset whose deployment is unknown", []*schema.OwnerRef{ref("ReplicaSet", "web-7d9f8c")}, nil, map[string]string{
			"k8s.replicaset.name": "web-7d9f8c", "k8s.replicaset.uid": "uid-web-7d9f8c", "service.name": "web-7d9f8c"}},
		{"written before workloads were resolved", []*schema.OwnerRef{ref("Deployment", "web")}, nil, map[string]string{
			"k8s.deployment.name": "web", "k8s.deployment.uid": "uid-web", "service.name": "web"}},
		{"bare pod", nil, nil, map[string]string{"service.name": "debug-pod"}},
	}
	workloadKeys := []string{"k8s.deployment.name", "k8s.deployment.uid", "k8s.replicaset.name", "k8s.replicaset.uid",
		"k8s.statefulset.name", "k8s.statefulset.uid", "k8s.daemonset.name", "k8s.daemonset.uid",
		"k8s.cronjob.name", "k8s.cronjob.uid", "k8s.job.name", "k8s.job.uid", "service.name"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &schema.Pod{Uid: "uid-pod", Name: "debug-pod", Namespace: "shop", Owners: tt.owners, Workload: tt.workload}
			c := &schema.Container{Id: "cid", Name: "app"}
			got := map[string]string{}
			for _, kv := range endpointAttributes("node-a", pod, c, &schema.Task{Pid: 1, Exe: "/app"}, true) {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			for _, k := range []string{"k8s.node.name", "k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.container.name"} {
				if got[k] == "" {
					t.Errorf("%s missing", k)
				}
			}
			workload := map[string]string{}
			for _, k := range workloadKeys {
				if v, ok := got[k]; ok {
					workload[k] = v
				}
			}
			if !maps.Equal(workload, tt.want) {
				t.Errorf("workload attributes\n got %v\nwant %v", workload, tt.want)
			}
		})
	}
}
