package cluster_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
)

// workloadImage runs testenv/workload's roles (cmd/weft-workload) on
// busybox; each workload logs what it did, the ground truth the graph is
// compared with.
const workloadImage = "weft.local/workload:test"

// The workloads' namespace, and the sizes each server takes and answers.
const (
	appsNS = "apps"
	// The broker: a request/response server on Redis's port, which weft's
	// default broker rules mark as kind redis.
	brokerPort, brokerUp, brokerDown = 6379, 100, 1000
	callerCalls                      = 20
	reportCalls                      = 7
	// The pod whose app calls its sidecar over a unix socket in a shared
	// emptyDir, at a path weft's default rules mark as a crypto-broker.
	sockDir                   = "/var/run/crypto-broker"
	sockPath                  = sockDir + "/broker.sock"
	unixCalls, unixUp, unixDn = 15, 64, 256
	// The pod deleted and recreated (same name, a new uid), called by
	// busybox nc (a short-lived process per call) before and after.
	rebornPort, rebornUp, rebornDown = 8080, 10, 100
	rebornCallsBefore, rebornAfter   = 5, 6
	// Calls of each of them to the pod's IP (no Service, no name).
	rebornByIP = 3
)

// edgeKey is a CALLS edge as /api/v1/graph gives it.
type edgeKey struct {
	From, To, Transport string
	Port                int
	Path                string
}

type edgeTotals struct{ Count, Sent, Received int }

// podTruth is what the graph must say about one workload pod.
type podTruth struct {
	UID, Name, IP string
	// Containers by name → container id.
	Containers map[string]string
	// Owner is the graph id of the Workload that must own it, "" for a
	// bare pod (which has none).
	Owner string
	// Broker is the kind the pod (as a server) is marked with, "" if none;
	// BrokerContainers the containers marked so.
	Broker           string
	BrokerContainers []string
	// Deleted: the pod was deleted during the test. The graph keeps it,
	// with its calls, ended (ended_at).
	Deleted bool
}

// truth is what the workloads did, from their own logs.
type truth struct {
	Pods  []*podTruth
	Edges map[edgeKey]edgeTotals
	// Unseeable are edges of calls made while no collector ran on the
	// node (a collector's rollout restart): each is in the graph exactly,
	// or with its count and part of its bytes (a call that straddled the
	// gap's edge: its open seen, its close not), or not at all; nothing
	// else.
	Unseeable map[edgeKey]edgeTotals
}

func (tr *truth) ids() map[string]bool {
	ids := map[string]bool{}
	for _, p := range tr.Pods {
		ids["Pod:"+p.UID] = true
		for _, id := range p.Containers {
			ids["Container:"+id] = true
		}
	}
	return ids
}

// call records n calls from client (pod, container) to server (pod,
// container) at both levels, as the graph has them.
func (tr *truth) call(cli *podTruth, cliCtr string, srv *podTruth, srvCtr, transport string, port int, path string, tot edgeTotals) {
	add := func(k edgeKey) {
		e := tr.Edges[k]
		tr.Edges[k] = edgeTotals{e.Count + tot.Count, e.Sent + tot.Sent, e.Received + tot.Received}
	}
	add(edgeKey{"Pod:" + cli.UID, "Pod:" + srv.UID, transport, port, path})
	add(edgeKey{"Container:" + cli.Containers[cliCtr], "Container:" + srv.Containers[srvCtr], transport, port, path})
}

// runWorkloads runs every test workload in namespace apps and returns
// their ground truth:
//   - broker: a Deployment behind Service broker;
//   - caller: a Deployment calling it through the Service, 20 times;
//   - nightly: a CronJob (suspended), run once by hand as a Job it owns
//     (as `kubectl create job --from=cronjob/nightly` does), calling it 7
//     times;
//   - shop: a pod whose app calls its sidecar (a native sidecar) over a
//     unix socket in a shared emptyDir, 15 times;
//   - reborn: a bare pod behind Service reborn, called by a Job with
//     busybox nc, deleted, created again under the same name, and called
//     by a second Job.
func runWorkloads(ctx context.Context, t *testing.T, c *cluster.Cluster) *truth {
	t.Helper()
	cs := c.Client
	tr := &truth{Edges: map[edgeKey]edgeTotals{}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appsNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDefaultSA(ctx, t, cs, appsNS)

	// The broker and its callers.
	mustCreate(t, createDeployment(ctx, cs, "broker", 1, corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("broker", []string{"serve", "tcp", fmt.Sprintf(":%d", brokerPort), itoa(brokerUp), itoa(brokerDown), "/tmp/ready"}, readyFile("/tmp/ready")),
	}}))
	mustCreate(t, createService(ctx, cs, "broker", brokerPort))
	broker := waitPods(ctx, t, cs, "app=broker", 1)[0]
	waitRouted(ctx, t, "broker", broker.Status.PodIP, brokerPort)
	mustCreate(t, createDeployment(ctx, cs, "caller", 1, corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("caller", []string{"calls", "tcp", fmt.Sprintf("broker:%d", brokerPort), itoa(callerCalls), itoa(brokerUp), itoa(brokerDown), "wait"}, nil),
	}}))
	suspend := true
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: appsNS},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", Suspend: &suspend, JobTemplate: batchv1.JobTemplateSpec{Spec: jobSpec("nightly", corev1.PodSpec{
			Containers: []corev1.Container{workloadContainer("report", []string{"calls", "tcp", fmt.Sprintf("broker:%d", brokerPort), itoa(reportCalls), itoa(brokerUp), itoa(brokerDown)}, nil)},
		})}},
	}
	cj, err := cs.BatchV1().CronJobs(appsNS).Create(ctx, cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	controller := true
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly-manual", Namespace: appsNS,
			Annotations:     map[string]string{"cronjob.kubernetes.io/instantiate": "manual"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: &controller}}},
		Spec: cj.Spec.JobTemplate.Spec,
	}
	if _, err := cs.BatchV1().Jobs(appsNS).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The app and its unix-socket sidecar, a native sidecar (an init
	// container that keeps running) the app starts after.
	always := corev1.ContainerRestartPolicyAlways
	sidecar := workloadContainer("crypto-broker", []string{"serve", "unix", sockPath, itoa(unixUp), itoa(unixDn)}, &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-S", sockPath}}},
		PeriodSeconds: 1, FailureThreshold: 60,
	})
	sidecar.StartupProbe, sidecar.ReadinessProbe = sidecar.ReadinessProbe, nil
	sidecar.RestartPolicy = &always
	app := workloadContainer("app", []string{"calls", "unix", sockPath, itoa(unixCalls), itoa(unixUp), itoa(unixDn), "wait"}, nil)
	vm := []corev1.VolumeMount{{Name: "sock", MountPath: sockDir}}
	sidecar.VolumeMounts, app.VolumeMounts = vm, vm
	shopPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: appsNS, Labels: map[string]string{"app": "shop"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{sidecar}, Containers: []corev1.Container{app},
			Volumes: []corev1.Volume{{Name: "sock", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	if _, err := cs.CoreV1().Pods(appsNS).Create(ctx, shopPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The pod deleted and created again, and its callers before and after.
	reborn := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "reborn", Namespace: appsNS, Labels: map[string]string{"app": "reborn"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				workloadContainer("echo", []string{"serve", "tcp", fmt.Sprintf(":%d", rebornPort), itoa(rebornUp), itoa(rebornDown), "/tmp/ready"}, readyFile("/tmp/ready")),
			}},
		}
	}
	// Each Job calls through the Service (the VIP resolved to the pod
	// that served), then the pod's IP itself (the peer given by its
	// address only): the same address before and after the delete.
	ncJob := func(name string, n int, ip string) {
		script := ncCalls(n, "reborn", rebornPort, rebornUp, "0") + "; " + ncCalls(rebornByIP, ip, rebornPort, rebornUp, "0")
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appsNS}, Spec: jobSpec(name, corev1.PodSpec{Containers: []corev1.Container{{
			Name: "calls", Image: cluster.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/bin/sh", "-c", script},
		}}})}
		if _, err := cs.BatchV1().Jobs(appsNS).Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, createService(ctx, cs, "reborn", rebornPort))
	if _, err := cs.CoreV1().Pods(appsNS).Create(ctx, reborn(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := waitPods(ctx, t, cs, "app=reborn", 1)[0]
	waitRouted(ctx, t, "reborn", before.Status.PodIP, rebornPort)
	ncJob("reborn-before", rebornCallsBefore, before.Status.PodIP)
	waitJob(ctx, t, cs, "reborn-before")
	rebornIP, err := netip.ParseAddr(before.Status.PodIP)
	if err != nil {
		t.Fatalf("pod reborn's IP %q: %v", before.Status.PodIP, err)
	}
	grace := int64(1)
	if err := cs.CoreV1().Pods(appsNS).Delete(ctx, "reborn", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		_, err := cs.CoreV1().Pods(appsNS).Get(ctx, "reborn", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod reborn not gone yet (%v)", err)
	})
	// The new pod gets the deleted one's IP: once the old sandbox has
	// released it (and kube-proxy no longer routes the Service there),
	// host-local is told to hand it out next.
	waitUnrouted(ctx, t, "reborn", before.Status.PodIP, rebornPort)
	natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error { return c.NextPodIP(rebornIP) })
	if _, err := cs.CoreV1().Pods(appsNS).Create(ctx, reborn(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := waitPods(ctx, t, cs, "app=reborn", 1)[0]
	if after.UID == before.UID {
		t.Fatal("the recreated pod reborn has the deleted one's uid")
	}
	if after.Status.PodIP != before.Status.PodIP {
		t.Fatalf("the recreated pod reborn (uid %s) got IP %s, not the deleted one's (uid %s) %s: the reused IP is not tested", after.UID, after.Status.PodIP, before.UID, before.Status.PodIP)
	}
	t.Logf("pod reborn deleted (uid %s) and created again (uid %s) with the same IP %s", before.UID, after.UID, after.Status.PodIP)
	waitRouted(ctx, t, "reborn", after.Status.PodIP, rebornPort)
	ncJob("reborn-after", rebornAfter, after.Status.PodIP)

	// Everything done: each workload's log is its ground truth.
	waitJob(ctx, t, cs, "nightly-manual")
	waitJob(ctx, t, cs, "reborn-after")
	for _, sel := range []string{"app=caller", "app=shop"} {
		natstest.CheckFor(t, 2*time.Minute, 500*time.Millisecond, func() error {
			logs := podLogs(cs, appsNS, sel)
			if !strings.Contains(logs, "done ") {
				return fmt.Errorf("%s has not finished its calls: %q", sel, logs)
			}
			return nil
		})
	}

	podOf := func(sel string) *podTruth {
		ps := waitPods(ctx, t, cs, sel, 1)
		return truthOf(t, cs, ps[0])
	}
	brokerP, callerP, shopP := podOf("app=broker"), podOf("app=caller"), podOf("app=shop")
	brokerP.Owner, callerP.Owner = "Workload:Deployment/apps/broker", "Workload:Deployment/apps/caller"
	brokerP.Broker, brokerP.BrokerContainers = "redis", []string{"broker"}
	shopP.Broker, shopP.BrokerContainers = "crypto-broker", []string{"crypto-broker"}
	nightlyP := podOf("job-name=nightly-manual")
	nightlyP.Owner = "Workload:CronJob/apps/nightly"
	beforeP, afterP := truthOf(t, cs, before), truthOf(t, cs, after)
	beforeP.Deleted = true
	rbBefore, rbAfter := podOf("job-name=reborn-before"), podOf("job-name=reborn-after")
	rbBefore.Owner, rbAfter.Owner = "Workload:Job/apps/reborn-before", "Workload:Job/apps/reborn-after"
	tr.Pods = []*podTruth{brokerP, callerP, nightlyP, shopP, beforeP, afterP, rbBefore, rbAfter}

	tr.call(callerP, "caller", brokerP, "broker", "tcp", brokerPort, "", logTotals(t, cs, "app=caller", callerCalls))
	tr.call(nightlyP, "report", brokerP, "broker", "tcp", brokerPort, "", logTotals(t, cs, "job-name=nightly-manual", reportCalls))
	tr.call(shopP, "app", shopP, "crypto-broker", "unix", 0, sockPath, logTotals(t, cs, "app=shop", unixCalls))
	tr.call(rbBefore, "calls", beforeP, "echo", "tcp", rebornPort, "", logTotals(t, cs, "job-name=reborn-before", rebornCallsBefore+rebornByIP))
	rbTot := logTotals(t, cs, "job-name=reborn-after", rebornAfter+rebornByIP)
	tr.call(rbAfter, "calls", afterP, "echo", "tcp", rebornPort, "", rbTot)
	// The servers' own logs agree with their clients'.
	if served := strings.Count(podLogsOf(cs, appsNS, brokerP.Name, "broker"), "served "); served != callerCalls+reportCalls {
		t.Fatalf("the broker served %d calls, its callers logged %d", served, callerCalls+reportCalls)
	}
	if served := strings.Count(podLogsOf(cs, appsNS, afterP.Name, "echo"), "served "); served != rbTot.Count {
		t.Fatalf("the recreated reborn served %d calls, its caller logged %d", served, rbTot.Count)
	}
	return tr
}

// ncCalls is a busybox shell script that calls host:port n times with nc,
// sending up bytes each time and pausing pause seconds between calls, and
// logs each call as it happened: the bytes it got back and what nc said
// on stderr.
func ncCalls(n int, host string, port, up int, pause string) string {
	return fmt.Sprintf(`for i in $(seq 1 %d); do head -c %d /dev/zero | nc -w 5 %s %d >/tmp/r 2>/tmp/e; echo "call $i sent %d received $(wc -c </tmp/r) $(cat /tmp/e)"; sleep %s; done`,
		n, up, host, port, up, pause)
}

// callLine is one call a workload logged: the bytes sent and received,
// then anything nc said (an error).
var callLine = regexp.MustCompile(`^call (\d+) sent (\d+) received (\d+)\s*(.*)$`)

// unresolved is busybox nc's error for a host it could not resolve: the
// call never left the pod (no packet to the peer), so it is no connection
// and not in the ground truth. It happens now and then on the test's
// loaded node (the resolver's timeout while CoreDNS is starved).
const unresolved = "bad address"

// logTotals sums a workload's logged calls. Each of the n must have been
// answered in full, or have failed before it left the pod (the name did
// not resolve): those are logged and left out. Any other failure is fatal,
// the test cannot know what the collector should have seen.
func logTotals(t *testing.T, cs kubernetes.Interface, sel string, n int) edgeTotals {
	t.Helper()
	logs := podLogs(cs, appsNS, sel)
	var tot edgeTotals
	lines, unsent := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		m := callLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		lines++
		s, _ := strconv.Atoi(m[2])
		r, _ := strconv.Atoi(m[3])
		switch {
		case m[4] == "" && r > 0:
			tot.Count++
			tot.Sent += s
			tot.Received += r
		case r == 0 && strings.Contains(m[4], unresolved):
			unsent++
			t.Logf("%s: call %s never left the pod, not in the ground truth: %s", sel, m[1], m[4])
		default:
			t.Fatalf("%s: call %s failed (received %d, %q): its ground truth is unknown:\n%s", sel, m[1], r, m[4], logs)
		}
	}
	if lines != n || unsent > n/10 {
		t.Fatalf("%s logged %d calls (%d of them never left the pod), want %d:\n%s", sel, lines, unsent, n, logs)
	}
	return tot
}

func truthOf(t *testing.T, cs kubernetes.Interface, p corev1.Pod) *podTruth {
	t.Helper()
	pt := &podTruth{UID: string(p.UID), Name: p.Name, IP: p.Status.PodIP, Containers: map[string]string{}}
	for _, st := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if st.RestartCount > 0 {
			// Its log would hold only its last run's calls.
			t.Fatalf("pod %s: container %s restarted %d times: %s", p.Name, st.Name, st.RestartCount, podLogsOf(cs, appsNS, p.Name, st.Name))
		}
		_, id, ok := strings.Cut(st.ContainerID, "://")
		if !ok || id == "" {
			t.Fatalf("pod %s: container %s has no id yet (%q)", p.Name, st.Name, st.ContainerID)
		}
		pt.Containers[st.Name] = id
	}
	return pt
}

// compareGraph says how g differs from the workloads' ground truth: every
// CALLS edge that touches a workload pod or container, with its count and
// bytes; the pods with their name, namespace and IP; their containers;
// their owners (the top controller, never a ReplicaSet or the Job a
// CronJob made); the broker marks. nil when it is all there, exactly.
func compareGraph(g *graph.Graph, tr *truth) error {
	var diffs []string
	nodes := map[string]graph.GNode{}
	for _, n := range g.Nodes {
		nodes[n.ID] = n
	}
	links := map[string]bool{}
	got := map[edgeKey]edgeTotals{}
	ids := tr.ids()
	num := func(v any) int { f, _ := v.(float64); return int(f) }
	for _, e := range g.Edges {
		if e.Type != "CALLS" {
			links[e.Type+" "+e.From+" "+e.To] = true
			continue
		}
		if !ids[e.From] && !ids[e.To] {
			continue
		}
		path, _ := e.Props["path"].(string)
		tp, _ := e.Props["transport"].(string)
		k := edgeKey{e.From, e.To, tp, num(e.Props["port"]), path}
		got[k] = edgeTotals{num(e.Props["count"]), num(e.Props["bytes_sent"]), num(e.Props["bytes_received"])}
	}
	for k, want := range tr.Edges {
		if k.Transport == "unix" {
			// The collector reports a unix connection when it is made,
			// without bytes (collectors/bpf's unix_event has none): the
			// count is exact, the bytes are 0. Compare them too once
			// it counts them.
			want.Sent, want.Received = 0, 0
		}
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %v %+v", k, want))
		} else if g != want {
			diffs = append(diffs, fmt.Sprintf("%v: %+v, the workloads logged %+v", k, g, want))
		}
	}
	for k, g := range got {
		if _, ok := tr.Edges[k]; ok {
			continue
		}
		if w, ok := tr.Unseeable[k]; ok {
			if g.Count != w.Count || g.Sent > w.Sent || g.Received > w.Received {
				diffs = append(diffs, fmt.Sprintf("%v (a call in the collector's gap): %+v, the workloads logged %+v", k, g, w))
			}
			continue
		}
		diffs = append(diffs, fmt.Sprintf("unexpected %v %+v", k, g))
	}
	hasLabel := func(n graph.GNode, l string) bool {
		for _, x := range n.Labels {
			if x == l {
				return true
			}
		}
		return false
	}
	for _, p := range tr.Pods {
		id := "Pod:" + p.UID
		n, ok := nodes[id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("no node %s (pod %s)", id, p.Name))
			continue
		}
		if n.Props["name"] != p.Name || n.Props["namespace"] != appsNS || n.Props["ip"] != p.IP {
			diffs = append(diffs, fmt.Sprintf("pod %s: props %v, want name %s namespace %s ip %s", p.Name, n.Props, p.Name, appsNS, p.IP))
		}
		// A deleted pod is ended (ended_at), not removed; a pod that
		// still exists (running, or a Job's, completed) is not.
		if _, ended := n.Props["ended_at"]; ended != p.Deleted {
			diffs = append(diffs, fmt.Sprintf("pod %s (uid %s): ended_at %v, want ended %v", p.Name, p.UID, n.Props["ended_at"], p.Deleted))
		}
		for name, cid := range p.Containers {
			c, ok := nodes["Container:"+cid]
			if !ok || !links["HAS_CONTAINER "+id+" Container:"+cid] {
				diffs = append(diffs, fmt.Sprintf("pod %s: container %s (%s) missing or not linked", p.Name, name, cid))
				continue
			}
			// Every container named, client ones too (a client that
			// called at once after it started is named by its pod's
			// next announcement, once the kubelet reported it).
			if c.Props["name"] != name || c.Props["image"] == nil || c.Props["image"] == "" {
				diffs = append(diffs, fmt.Sprintf("container %s of %s: props %v, want its name and image", name, p.Name, c.Props))
			}
		}
		var owners []string
		for l := range links {
			if f := strings.Fields(l); f[0] == "OWNS" && f[2] == id {
				owners = append(owners, f[1])
			}
		}
		sort.Strings(owners)
		want := []string{}
		if p.Owner != "" {
			want = []string{p.Owner}
		}
		if strings.Join(owners, ",") != strings.Join(want, ",") {
			diffs = append(diffs, fmt.Sprintf("pod %s: owned by %v, want %v", p.Name, owners, want))
		}
		if got := hasLabel(n, "Broker"); got != (p.Broker != "") || (got && n.Props["kind"] != p.Broker) {
			diffs = append(diffs, fmt.Sprintf("pod %s: labels %v kind %v, want broker %q", p.Name, n.Labels, n.Props["kind"], p.Broker))
		}
		for name, cid := range p.Containers {
			want := ""
			for _, b := range p.BrokerContainers {
				if b == name {
					want = p.Broker
				}
			}
			c := nodes["Container:"+cid]
			if got := hasLabel(c, "Broker"); got != (want != "") || (got && c.Props["kind"] != want) {
				diffs = append(diffs, fmt.Sprintf("container %s of %s: labels %v kind %v, want broker %q", name, p.Name, c.Labels, c.Props["kind"], want))
			}
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("the graph is not the workloads' ground truth:\n  %s", strings.Join(diffs, "\n  "))
	}
	return nil
}

func workloadContainer(name string, args []string, readiness *corev1.Probe) corev1.Container {
	return corev1.Container{
		Name: name, Image: workloadImage, ImagePullPolicy: corev1.PullNever,
		Command: append([]string{"/bin/weft-workload"}, args...), ReadinessProbe: readiness,
	}
}

func readyFile(f string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", f}}}, PeriodSeconds: 1}
}

func jobSpec(name string, spec corev1.PodSpec) batchv1.JobSpec {
	backoff := int32(0)
	spec.RestartPolicy = corev1.RestartPolicyNever
	return batchv1.JobSpec{BackoffLimit: &backoff, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}, Spec: spec}}
}

func createDeployment(ctx context.Context, cs kubernetes.Interface, name string, replicas int32, spec corev1.PodSpec) error {
	labels := map[string]string{"app": name}
	_, err := cs.AppsV1().Deployments(appsNS).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appsNS},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}, metav1.CreateOptions{})
	return err
}

func createService(ctx context.Context, cs kubernetes.Interface, name string, port int32) error {
	_, err := cs.CoreV1().Services(appsNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appsNS},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(port)}}},
	}, metav1.CreateOptions{})
	return err
}

func mustCreate(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// waitPods waits until sel matches n pods in apps, each Ready (or, for a
// Job's, Succeeded), and returns them.
func waitPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, sel string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	natstest.CheckFor(t, 3*time.Minute, 250*time.Millisecond, func() error {
		l, err := cs.CoreV1().Pods(appsNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return err
		}
		pods = pods[:0]
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase == corev1.PodSucceeded || podReady(p) {
				pods = append(pods, p)
			}
		}
		if len(pods) != n {
			return fmt.Errorf("%d of %d pods %s ready (%d listed)", len(pods), n, sel, len(l.Items))
		}
		return nil
	})
	return pods
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func waitJob(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	natstest.CheckFor(t, 3*time.Minute, 250*time.Millisecond, func() error {
		j, err := cs.BatchV1().Jobs(appsNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Failed > 0 {
			t.Fatalf("job %s failed: %s", name, podLogs(cs, appsNS, "job-name="+name))
		}
		if j.Status.Succeeded != 1 {
			return fmt.Errorf("job %s not done", name)
		}
		return nil
	})
}

func waitDefaultSA(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitRouted waits until kube-proxy has programmed Service svc of apps to
// send to podIP:port (its nftables endpoint chain), so that no workload's
// first call meets a Service with no endpoint: it asks nft, and makes no
// connection of its own.
func waitRouted(ctx context.Context, t *testing.T, svc, podIP string, port int) {
	t.Helper()
	routed(ctx, t, svc, podIP, port, true)
}

// waitUnrouted waits until kube-proxy no longer sends Service svc to
// podIP:port (a deleted pod's endpoint).
func waitUnrouted(ctx context.Context, t *testing.T, svc, podIP string, port int) {
	t.Helper()
	routed(ctx, t, svc, podIP, port, false)
}

// routed waits until the Service's chain jumps to podIP:port's endpoint
// chain, which DNATs to it (want), or until the Service no longer jumps
// there. Whether the endpoint chain exists says nothing: kube-proxy's
// nftables mode flushes an unused one at once but deletes it only later.
func routed(ctx context.Context, t *testing.T, svc, podIP string, port int, want bool) {
	t.Helper()
	jump := regexp.MustCompile(fmt.Sprintf(`goto endpoint-[A-Z0-9]+-%s\b`, regexp.QuoteMeta(fmt.Sprintf("%s/%s/tcp/__%s/%d", appsNS, svc, podIP, port))))
	dnat := regexp.MustCompile(fmt.Sprintf(`dnat (ip )?to %s\b`, regexp.QuoteMeta(fmt.Sprintf("%s:%d", podIP, port))))
	natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
		out, err := exec.CommandContext(ctx, "nft", "list", "table", "ip", "kube-proxy").Output()
		if err != nil {
			return fmt.Errorf("nft list table ip kube-proxy: %w", err)
		}
		if want && !dnat.Match(out) {
			return fmt.Errorf("kube-proxy does not DNAT to %s:%d yet", podIP, port)
		}
		if has := jump.Match(out); has != want {
			return fmt.Errorf("kube-proxy's Service %s sends to endpoint %s:%d: %v, want %v", svc, podIP, port, has, want)
		}
		return nil
	})
}

func podLogsOf(cs kubernetes.Interface, ns, pod, container string) string {
	out, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// callsDuringRollout runs a Job that calls the broker with busybox nc,
// one call every 300 ms, while during() runs (a rollout restart), and adds
// its logged calls to the ground truth.
func callsDuringRollout(ctx context.Context, t *testing.T, cs kubernetes.Interface, tr *truth, during func()) {
	t.Helper()
	const name, n = "during-rollout", 50
	script := ncCalls(n, "broker", brokerPort, brokerUp, "0.3")
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appsNS}, Spec: jobSpec(name, corev1.PodSpec{Containers: []corev1.Container{{
		Name: "calls", Image: cluster.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/bin/sh", "-c", script},
	}}})}
	if _, err := cs.BatchV1().Jobs(appsNS).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	during()
	waitJob(ctx, t, cs, name)
	cli := truthOf(t, cs, waitPods(ctx, t, cs, "job-name="+name, 1)[0])
	cli.Owner = "Workload:Job/apps/" + name
	var broker *podTruth
	for _, p := range tr.Pods {
		if strings.HasPrefix(p.Name, "broker-") {
			broker = p
		}
	}
	tr.Pods = append(tr.Pods, cli)
	tr.call(cli, "calls", broker, "broker", "tcp", brokerPort, "", logTotals(t, cs, "job-name="+name, n))
}
