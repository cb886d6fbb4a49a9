package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
)

// The collector rollout's workloads: a server pod srvName with a pool
// server (a connection serves many requests) and a server on many ports,
// and a client pod cliName holding one connection to the pool open
// across the restart while it makes one short call a port to the other,
// paced, each call logged with its start and end: a call per port makes
// a CALLS edge per call, so the graph says which calls it has.
const (
	poolPort, poolUp, poolDown   = 7000, 20, 200
	pacedFirst, pacedN           = 7100, 240
	pacedUp, pacedDown           = 10, 100
	pacedPause, poolPause        = "200ms", "200ms"
	callsAround                  = 3 // paced calls before the restart, and after the new collector attached
	collectorLabel               = "app.kubernetes.io/component=collector"
	collectorAttached            = `msg="collector attached"`
	collectorDaemonSet           = "weft-collector"
	collectorRolloutControlMount = "/ctl"
)

// pacedLine is one paced call as the client logged it.
var pacedLine = regexp.MustCompile(`^call (\d+) port (\d+) start (\d+) end (\d+) (?:sent (\d+) received (\d+)|error (.*))$`)

type pacedCall struct {
	port       int
	start, end time.Time
	sent, recv int
}

// collectorGap is what the test measured of a collector's rollout
// restart, on the node's clock (the test runs on the node).
type collectorGap struct {
	patched      time.Time // the restart asked for
	oldAlive     time.Time // the old pod last seen not deleting (taken before the look): its collector ran until then
	oldDeleting  time.Time // the old pod first seen deleting
	oldGone      time.Time // the old pod first seen gone
	attached     time.Time // the new collector's "collector attached" log line
	newReady     time.Time // the new pod first seen Ready
	oldPod       string
	newPod       string
	oldFinished  time.Time // the old container's exit (seconds), when seen
	oldExitCode  int32
	sawOldFinish bool
}

// checkCollectorRollout restarts the collector DaemonSet (as `kubectl
// rollout restart daemonset` does) while pod NAME-cli calls NAME-srv, and
// adds what they did to the ground truth: the pooled connection, opened
// before the restart (and in the graph, counted, before it) and closed
// after it, with its exact count and bytes; every paced call that ended
// while the old collector surely ran (before its pod was seen deleting),
// or started after the new collector attached, exactly. With surge (the
// chart's collector.updateStrategy: maxSurge 10%, maxUnavailable 0) the
// new collector must attach before the old one stops, so there is no gap,
// and the two collectors' copies of each connection must count once.
// Without it (the DaemonSet first set to maxSurge 0, maxUnavailable 1, and
// back to the chart's after) a call between is made while no collector
// runs, and nothing can see a call that starts and ends then (the
// programs and their maps go with the old collector): the truth says each
// may be missing.
func checkCollectorRollout(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, name string, surge bool, tr *truth, graphNow func() (*graph.Graph, error), waitGraph func(string)) {
	t.Helper()
	cs := c.Client
	srvName, cliName := name+"-srv", name+"-cli"
	ctl := filepath.Join(c.Dir, "collector-rollout-"+name)
	stop := filepath.Join(ctl, "stop")
	if err := os.MkdirAll(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(stop); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	srv := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: srvName, Namespace: appsNS, Labels: map[string]string{"app": srvName}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			workloadContainer("pool", []string{"pool", "tcp", fmt.Sprintf(":%d", poolPort), itoa(poolUp), itoa(poolDown), "/tmp/ready"}, readyFile("/tmp/ready")),
			workloadContainer("ports", []string{"serveports", "tcp", "", itoa(pacedFirst), itoa(pacedN), itoa(pacedUp), itoa(pacedDown), "/tmp/ready"}, readyFile("/tmp/ready")),
		}},
	}
	mustCreate(t, createPod(ctx, cs, srv))
	srvPod := waitPods(ctx, t, cs, "app="+srvName, 1)[0]
	ip := srvPod.Status.PodIP
	hostDir := corev1.HostPathDirectoryOrCreate
	vm := []corev1.VolumeMount{{Name: "ctl", MountPath: collectorRolloutControlMount}}
	stopIn := collectorRolloutControlMount + "/stop"
	long := workloadContainer("long", []string{"longcall", "tcp", fmt.Sprintf("%s:%d", ip, poolPort), itoa(poolUp), itoa(poolDown), poolPause, stopIn}, nil)
	paced := workloadContainer("paced", []string{"paced", "tcp", ip, itoa(pacedFirst), itoa(pacedN), itoa(pacedUp), itoa(pacedDown), pacedPause, stopIn}, nil)
	long.VolumeMounts, paced.VolumeMounts = vm, vm
	cli := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: cliName, Namespace: appsNS, Labels: map[string]string{"app": cliName}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{long, paced},
			Volumes:       []corev1.Volume{{Name: "ctl", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: ctl, Type: &hostDir}}}},
		},
	}
	mustCreate(t, createPod(ctx, cs, cli))
	cliPod := waitPods(ctx, t, cs, "app="+cliName, 1)[0]
	srvT, cliT := truthOf(t, cs, srvPod), truthOf(t, cs, cliPod)

	// The pooled connection is in the graph (the old collector reported
	// it open) and the paced calls have begun.
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		if n := len(pacedCalls(t, cs, cliName)); n < callsAround {
			return fmt.Errorf("%d paced calls so far", n)
		}
		g, err := graphNow()
		if err != nil {
			return err
		}
		for _, e := range g.Edges {
			if e.Type == "CALLS" && e.From == "Pod:"+cliT.UID && e.To == "Pod:"+srvT.UID && int(num(e.Props["port"])) == poolPort && num(e.Props["count"]) == 1 {
				return nil
			}
		}
		return fmt.Errorf("the pooled connection %s → %s:%d is not in the graph yet", cliName, srvName, poolPort)
	})
	stepsBefore := strings.Count(podLogsOf(cs, appsNS, cliName, "long"), "step ")

	if !surge {
		// The chart rolls the collector out with surge; without it (an
		// operator's maxUnavailable) the old collector stops first.
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, collectorDaemonSet, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		chart, err := json.Marshal(ds.Spec.UpdateStrategy.RollingUpdate)
		if err != nil {
			t.Fatal(err)
		}
		strategy := func(rolling string) {
			patch := `{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":` + rolling + `}}}`
			if _, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, collectorDaemonSet, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatalf("daemonset %s: rollingUpdate %s: %v", collectorDaemonSet, rolling, err)
			}
		}
		strategy(`{"maxSurge":0,"maxUnavailable":1}`)
		// The chart's again, so that a helm upgrade can patch it.
		defer strategy(string(chart))
	}
	gap := rolloutRestartDaemonSet(ctx, t, cs, ns, collectorDaemonSet)
	if surge && !gap.attached.Before(gap.oldAlive) {
		t.Fatalf("with maxSurge the new collector attached %s after the restart, the old one's pod was last seen running %s after it: want the new one attached first",
			gap.attached.Sub(gap.patched), gap.oldAlive.Sub(gap.patched))
	}

	// Calls after the new collector attached, and steps of the pooled
	// connection since then: then it closes.
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		after := 0
		for _, pc := range pacedCalls(t, cs, cliName) {
			if pc.start.After(gap.attached) {
				after++
			}
		}
		if after < callsAround {
			if strings.Contains(podLogsOf(cs, appsNS, cliName, "paced"), "done ") {
				t.Fatalf("the paced client made its %d calls before %d came after the collector's restart: make pacedN larger", pacedN, callsAround)
			}
			return fmt.Errorf("%d paced calls after the new collector attached", after)
		}
		return nil
	})
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		p, err := cs.CoreV1().Pods(appsNS).Get(ctx, cliName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			return nil
		case corev1.PodFailed:
			t.Fatalf("pod %s failed:\n%s\n%s", cliName, podLogsOf(cs, appsNS, cliName, "long"), podLogsOf(cs, appsNS, cliName, "paced"))
		}
		return fmt.Errorf("pod %s: %s", cliName, p.Status.Phase)
	})

	// The ground truth: the pooled connection, once, with its bytes.
	longLog := podLogsOf(cs, appsNS, cliName, "long")
	var sent, recv int
	if _, err := fmt.Sscanf(lastLine(longLog, "closed "), "closed sent %d received %d", &sent, &recv); err != nil {
		t.Fatalf("the pooled client's log has no totals (%v):\n%s", err, longLog)
	}
	if steps := strings.Count(longLog, "step "); steps <= stepsBefore || sent != steps*poolUp || recv != steps*poolDown {
		t.Fatalf("the pooled client: %d steps (%d before the restart), sent %d received %d:\n%s", steps, stepsBefore, sent, recv, longLog)
	}
	tr.Pods = append(tr.Pods, srvT, cliT)
	tr.call(cliT, "long", srvT, "pool", "tcp", poolPort, "", edgeTotals{1, sent, recv})
	// The paced calls: before the restart and after the new collector,
	// exactly; in between, unseeable.
	calls := pacedCalls(t, cs, cliName)
	var inGap []pacedCall
	for _, pc := range calls {
		tot := edgeTotals{1, pc.sent, pc.recv}
		if pc.end.Before(gap.oldAlive) || pc.start.After(gap.attached) {
			tr.call(cliT, "paced", srvT, "ports", "tcp", pc.port, "", tot)
			continue
		}
		inGap = append(inGap, pc)
		tr.unseeable(cliT, "paced", srvT, "ports", "tcp", pc.port, tot)
	}
	if served := strings.Count(podLogsOf(cs, appsNS, srvName, "ports"), "served "); served != len(calls) {
		t.Fatalf("the server on many ports served %d calls, its client logged %d", served, len(calls))
	}
	what := "calls during a rollout restart of the collector"
	if surge {
		what += " with maxSurge"
	}
	waitGraph(what)

	// What the graph has of the calls in the gap, and the gap as the
	// calls show it: from the end of the last call seen before the calls
	// not seen to the start of the first seen after them.
	g, err := graphNow()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, e := range g.Edges {
		if e.Type == "CALLS" && e.From == "Pod:"+cliT.UID && e.To == "Pod:"+srvT.UID {
			seen[int(num(e.Props["port"]))] = true
		}
	}
	var missing []string
	var lastBefore, firstAfter time.Time
	firstMissing := -1
	for i, pc := range calls {
		if !seen[pc.port] {
			missing = append(missing, strconv.Itoa(pc.port))
			if firstMissing < 0 {
				firstMissing = i
			}
		}
	}
	if firstMissing >= 0 {
		if firstMissing > 0 {
			lastBefore = calls[firstMissing-1].end
		}
		for i := len(calls) - 1; i >= 0 && seen[calls[i].port]; i-- {
			firstAfter = calls[i].start
		}
	}
	t.Logf("%s: old pod %s, new pod %s; after the patch: old pod last seen running %s, seen deleting %s, old container exited %s (exit %d; the API's seconds), old pod gone %s, new collector attached %s, new pod Ready %s",
		what, gap.oldPod, gap.newPod, since(gap.patched, gap.oldAlive), since(gap.patched, gap.oldDeleting), sinceIf(gap.patched, gap.oldFinished, gap.sawOldFinish), gap.oldExitCode,
		since(gap.patched, gap.oldGone), since(gap.patched, gap.attached), since(gap.patched, gap.newReady))
	window := "none: the new collector attached first"
	if gap.attached.After(gap.oldAlive) {
		window = gap.attached.Sub(gap.oldAlive).Round(time.Millisecond).String()
	}
	t.Logf("%s: %d paced calls (one each %s), %d of them in the window from the old collector last seen running to the new one's attach (%s), which the truth allows to be missing; the graph misses %d of them (ports %v), %d in it partly or whole",
		what, len(calls), pacedPause, len(inGap), window, len(missing), missing, len(inGap)-len(missing))
	if firstMissing >= 0 && !lastBefore.IsZero() && !firstAfter.IsZero() {
		t.Logf("%s: the gap as the calls show it: at most %s (end of the last call seen before the missing ones to the start of the first seen after)", what, firstAfter.Sub(lastBefore).Round(time.Millisecond))
	}
}

// rolloutRestartDaemonSet restarts DaemonSet name of ns as `kubectl
// rollout restart` does and waits until its rollout is complete (every
// node's pod updated and available, no old one left), watching the pods
// on the way for when the old one stopped and the new one attached.
func rolloutRestartDaemonSet(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) collectorGap {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: collectorLabel})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("%d collector pods, want the one node's", len(pods.Items))
	}
	var gap collectorGap
	old := pods.Items[0]
	gap.oldPod = old.Name
	gap.patched = time.Now()
	gap.oldAlive = gap.patched
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, gap.patched.Format(time.RFC3339))
	ds, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("rollout restart daemonset %s: %v", name, err)
	}
	gen := ds.Generation
	natstest.CheckFor(t, 3*time.Minute, 50*time.Millisecond, func() error {
		asked := time.Now()
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: collectorLabel})
		if err != nil {
			return err
		}
		now := time.Now()
		sawOld := false
		for _, p := range pods.Items {
			if p.UID == old.UID {
				sawOld = true
				if p.DeletionTimestamp == nil {
					gap.oldAlive = asked
				} else if gap.oldDeleting.IsZero() {
					gap.oldDeleting = now
				}
				for _, st := range p.Status.ContainerStatuses {
					if st.Name == "collector" && st.State.Terminated != nil && !gap.sawOldFinish {
						gap.sawOldFinish, gap.oldFinished, gap.oldExitCode = true, st.State.Terminated.FinishedAt.Time, st.State.Terminated.ExitCode
					}
				}
				continue
			}
			gap.newPod = p.Name
			if podReady(p) && gap.newReady.IsZero() {
				gap.newReady = now
			}
		}
		if !sawOld && gap.oldGone.IsZero() {
			gap.oldGone = now
		}
		d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := d.Status
		if st.ObservedGeneration < gen || st.UpdatedNumberScheduled != st.DesiredNumberScheduled || st.NumberAvailable != st.DesiredNumberScheduled || sawOld || gap.newReady.IsZero() {
			return fmt.Errorf("rollout of daemonset %s: %+v, old pod %s still there: %v", name, st, old.Name, sawOld)
		}
		return nil
	})
	// The new collector's attach, from its log's own timestamps (the
	// container runtime's, nanoseconds).
	natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
		tail := int64(200)
		out, err := cs.CoreV1().Pods(ns).GetLogs(gap.newPod, &corev1.PodLogOptions{Container: "collector", Timestamps: true, TailLines: &tail}).DoRaw(ctx)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			ts, rest, _ := strings.Cut(sc.Text(), " ")
			if !strings.Contains(rest, collectorAttached) {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return fmt.Errorf("collector %s: log timestamp %q: %w", gap.newPod, ts, err)
			}
			gap.attached = at
			return nil
		}
		return fmt.Errorf("collector %s has not logged %s yet", gap.newPod, collectorAttached)
	})
	return gap
}

// pacedCalls reads the paced client's calls from its log so far; a
// failed call is fatal (its server is always up, called by address).
func pacedCalls(t *testing.T, cs kubernetes.Interface, pod string) []pacedCall {
	t.Helper()
	logs := podLogsOf(cs, appsNS, pod, "paced")
	var calls []pacedCall
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		m := pacedLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		if m[7] != "" {
			t.Fatalf("paced call %s to port %s failed: %s:\n%s", m[1], m[2], m[7], logs)
		}
		ns := func(s string) time.Time { n, _ := strconv.ParseInt(s, 10, 64); return time.Unix(0, n) }
		port, _ := strconv.Atoi(m[2])
		sent, _ := strconv.Atoi(m[5])
		recv, _ := strconv.Atoi(m[6])
		calls = append(calls, pacedCall{port: port, start: ns(m[3]), end: ns(m[4]), sent: sent, recv: recv})
	}
	sort.Slice(calls, func(i, j int) bool { return calls[i].start.Before(calls[j].start) })
	return calls
}

// unseeable records a call made while no collector ran, at both levels:
// the graph may have it or not (see truth.Unseeable).
func (tr *truth) unseeable(cli *podTruth, cliCtr string, srv *podTruth, srvCtr, transport string, port int, tot edgeTotals) {
	if tr.Unseeable == nil {
		tr.Unseeable = map[edgeKey]edgeTotals{}
	}
	tr.Unseeable[edgeKey{"Pod:" + cli.UID, "Pod:" + srv.UID, transport, port, ""}] = tot
	tr.Unseeable[edgeKey{"Container:" + cli.Containers[cliCtr], "Container:" + srv.Containers[srvCtr], transport, port, ""}] = tot
}

func createPod(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) error {
	_, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	return err
}

func num(v any) float64 { f, _ := v.(float64); return f }

func lastLine(s, prefix string) string {
	last := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			last = l
		}
	}
	return last
}

func since(from, to time.Time) string {
	if to.IsZero() {
		return "not seen"
	}
	return "+" + to.Sub(from).Round(time.Millisecond).String()
}

func sinceIf(from, to time.Time, ok bool) string {
	if !ok {
		return "not seen"
	}
	return since(from, to)
}
