package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftobs/weft/testenv/cluster"
)

// usage is a snapshot of what the collector has used (its container's
// cgroups), of the node's CPU time (/proc/stat), and of the pipeline's
// counters (each stage's /metrics), for figures over a window.
type usage struct {
	at                time.Time
	collectorCPU      time.Duration // cpuacct.usage
	collectorRSS      uint64        // memory.stat rss
	collectorPeak     uint64        // memory.max_usage_in_bytes
	nodeBusy, nodeAll uint64        // jiffies
	eventsOut         float64       // collector: events published
	callsIn           float64       // graph: calls folded
}

// snapshot reads it; a figure it cannot read stays 0 and is said.
func snapshot(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) usage {
	t.Helper()
	u := usage{at: time.Now()}
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		comp := p.Labels["app.kubernetes.io/component"]
		switch comp {
		case "collector":
			for _, st := range p.Status.ContainerStatuses {
				_, id, _ := strings.Cut(st.ContainerID, "://")
				if st.Name != "collector" || id == "" {
					continue
				}
				dir := podCgroup("cpuacct", string(p.UID), id)
				if v, err := readUint(filepath.Join(dir, "cpuacct.usage")); err == nil {
					u.collectorCPU = time.Duration(v)
				} else {
					t.Logf("figures: collector CPU: %v", err)
				}
				mem := podCgroup("memory", string(p.UID), id)
				u.collectorRSS = statField(filepath.Join(mem, "memory.stat"), "rss")
				u.collectorPeak, _ = readUint(filepath.Join(mem, "memory.max_usage_in_bytes"))
			}
			u.eventsOut += metricSum(ctx, p.Status.PodIP, "weft_stage_events_out", `stage="collector"`)
		case "graph":
			u.callsIn += metricSum(ctx, p.Status.PodIP, "weft_stage_events_in", `stage="graph"`)
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		for i, s := range f[1:] {
			v, _ := strconv.ParseUint(s, 10, 64)
			u.nodeAll += v
			if i != 3 && i != 4 { // idle, iowait
				u.nodeBusy += v
			}
		}
	}
	return u
}

// podCgroup is a container's cgroup directory in hierarchy ctrl (v1,
// cgroupfs driver: kubepods/<qos>/pod<uid>/<id>, or kubepods/pod<uid>/<id>).
func podCgroup(ctrl, uid, id string) string {
	for _, pat := range []string{"/sys/fs/cgroup/%s/kubepods/*/pod%s/%s", "/sys/fs/cgroup/%s/kubepods/pod%s/%s"} {
		if m, _ := filepath.Glob(fmt.Sprintf(pat, ctrl, uid, id)); len(m) == 1 {
			return m[0]
		}
	}
	return filepath.Join("/sys/fs/cgroup", ctrl, "no-cgroup-for-"+id)
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func statField(p, name string) uint64 {
	f, err := os.Open(p)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == name {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// metricSum adds the samples of the Prometheus counter name (with or
// without _total) whose labels contain match, from http://ip:7680/metrics.
func metricSum(ctx context.Context, ip, name, match string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":7680/metrics", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+"_total{") {
			continue
		}
		if !strings.Contains(l, match) {
			continue
		}
		f := strings.Fields(l)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// logFigures says what the collector and the pipeline did between a and b,
// with the node's own CPU time in the same window as the baseline.
func logFigures(t *testing.T, a, b usage) {
	t.Helper()
	wall := b.at.Sub(a.at)
	cpu := b.collectorCPU - a.collectorCPU
	busy := float64(b.nodeBusy-a.nodeBusy) / 100 // USER_HZ
	share := 0.0
	if busy > 0 {
		share = cpu.Seconds() / busy
	}
	t.Logf("figures over %s of test workload: collector CPU %s (%.1f%% of one core; %.1f%% of the node's busy CPU time, %.1f s), RSS %.1f MiB (peak %.1f MiB); pipeline: collector published %.0f events (%.0f/s), the graph folded %.0f calls (%.1f/s)",
		wall.Round(time.Second), cpu.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds(), 100*share, busy,
		float64(b.collectorRSS)/(1<<20), float64(b.collectorPeak)/(1<<20),
		b.eventsOut-a.eventsOut, (b.eventsOut-a.eventsOut)/wall.Seconds(), b.callsIn-a.callsIn, (b.callsIn-a.callsIn)/wall.Seconds())
}
