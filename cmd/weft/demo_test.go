package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/collectors/synthetic"
	"github.com/weftobs/weft/testenv/natstest"
)

type demoTruth struct {
	synthetic.Truth
	Done bool `json:"done"`
}

type apiGraph struct {
	Nodes []struct {
		ID     string         `json:"id"`
		Labels []string       `json:"labels"`
		Props  map[string]any `json:"props"`
	} `json:"nodes"`
	Edges []struct {
		From  string         `json:"from"`
		To    string         `json:"to"`
		Type  string         `json:"type"`
		Props map[string]any `json:"props"`
	} `json:"edges"`
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestDemoGraphIsItsGroundTruth runs `weft up` with the demo's simulated
// cluster (two nodes; frontend and shop Deployments whose pods ReplicaSets
// own, a NATS StatefulSet; restarts and exec probes every few hundred
// milliseconds) until it has published its total and ended, then compares
// the graph on /api/v1/graph with the ground truth the demo serves on
// /api/v1/demo/truth: every pod with its node, IP and owner, the pods
// deleted (and replaced) ended at their delete and the others not, and per
// pod-level edge the connections and bytes, exactly.
func TestDemoGraphIsItsGroundTruth(t *testing.T) {
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: demo}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
  CALLS:  {subjects: ["weft.calls.>"]}
stages:
  - {name: demo, kind: synthetic, deploy: inprocess, outputs: [EVENTS], config: {rate: 800, total: 3000, nodes: 2, pods: 5, restartEvery: 400ms, probeEvery: 100ms}}
  - {name: correlator, kind: correlator, deploy: inprocess, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph, kind: graph, deploy: inprocess, inputs: [CALLS], config: {store: embedded}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	p := start(t, "up", "-f", topo, "--data-dir", filepath.Join(dir, "data"), "--listen", httpAddr, "--nats-listen", freePort(t), "--status-every", "0")
	base := "http://" + httpAddr

	var truth demoTruth
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		if err := getJSON(base+synthetic.TruthPath, &truth); err != nil {
			return fmt.Errorf("%w; stderr:\n%s", err, p.stderr)
		}
		if !truth.Done {
			return fmt.Errorf("demo not done: %d events", truth.Events)
		}
		return nil
	})
	if truth.Restarts == 0 || truth.Replaced == 0 || truth.Exits <= truth.Restarts || truth.Open != 0 || len(truth.Edges) == 0 {
		t.Fatalf("the demo ran no restart, pod replacement, probe or call, or left connections open: %+v", truth.Truth)
	}

	want := map[string]string{}
	for _, e := range truth.Edges {
		want[fmt.Sprintf("%s → %s:%d", e.Client, e.Server, e.Port)] = fmt.Sprintf("count %d sent %d received %d", e.Count, e.BytesSent, e.BytesReceived)
	}
	natstest.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var g apiGraph
		if err := getJSON(base+"/api/v1/graph", &g); err != nil {
			return err
		}
		return compareDemoGraph(truth, g, want)
	})
}

// compareDemoGraph compares g with the demo's truth: pods, their nodes
// and owners, and the calls folded to pod level (a pod's containers,
// restarted ones included, are the pod).
func compareDemoGraph(truth demoTruth, g apiGraph, want map[string]string) error {
	type node struct {
		labels []string
		props  map[string]any
	}
	nodes := map[string]node{}
	for _, n := range g.Nodes {
		nodes[n.ID] = node{n.Labels, n.Props}
	}
	podOf := map[string]string{} // container or pod id → pod name
	runsOn := map[string]string{}
	owners := map[string][]string{}
	for id, n := range nodes {
		if n.labels[0] == "Pod" {
			podOf[id] = fmt.Sprint(n.props["name"])
		}
		if n.labels[0] == "Process" || n.labels[0] == "External" {
			return fmt.Errorf("%s in the graph: every demo endpoint is a pod", id)
		}
	}
	for _, e := range g.Edges {
		switch e.Type {
		case "HAS_CONTAINER":
			podOf[e.To] = podOf[e.From]
		case "RUNS_ON":
			runsOn[podOf[e.From]] = strings.TrimPrefix(e.To, "Node:")
		case "OWNS":
			w := nodes[e.From].props
			owners[podOf[e.To]] = append(owners[podOf[e.To]], fmt.Sprintf("%s/%s", w["kind"], w["name"]))
		}
	}
	for _, p := range truth.Pods {
		n, ok := nodes["Pod:"+p.UID]
		switch {
		case !ok:
			return fmt.Errorf("pod %s not in the graph", p.Name)
		case n.props["name"] != p.Name || n.props["ip"] != p.IP || n.props["namespace"] != synthetic.Namespace:
			return fmt.Errorf("pod %s: graph has %v", p.Name, n.props)
		case runsOn[p.Name] != p.Node:
			return fmt.Errorf("pod %s runs on %q in the graph, on %s in the demo", p.Name, runsOn[p.Name], p.Node)
		}
		// The workload is the top controller: the Deployment above a
		// ReplicaSet, else the owner reference as Kubernetes gives it.
		want := p.Owner
		if p.Deployment != "" {
			want = "Deployment/" + p.Deployment
		}
		for _, o := range owners[p.Name] {
			if o != want {
				return fmt.Errorf("pod %s owned by %s in the graph; the demo says %s (deployment %q)", p.Name, o, p.Owner, p.Deployment)
			}
		}
		if len(owners[p.Name]) == 0 {
			return fmt.Errorf("pod %s has no owner in the graph", p.Name)
		}
		// A deleted pod is ended, at its delete; a running one is not.
		// (Both sides through float64, as JSON decodes them.)
		if end, ok := n.props["ended_at"].(float64); p.EndedAt == 0 && ok {
			return fmt.Errorf("pod %s runs in the demo, ended at %v in the graph", p.Name, end)
		} else if p.EndedAt != 0 && end != float64(p.EndedAt) {
			return fmt.Errorf("pod %s ended at %d in the demo, ended_at %v in the graph", p.Name, p.EndedAt, n.props["ended_at"])
		}
	}
	// Pod-level edges, and container-level ones folded to their pods,
	// must each give the truth.
	type agg struct{ count, sent, recv float64 }
	var diffs []string
	for _, level := range []string{"Pod:", "Container:"} {
		got := map[string]*agg{}
		for _, e := range g.Edges {
			if e.Type != "CALLS" || !strings.HasPrefix(e.From, level) {
				continue
			}
			k := fmt.Sprintf("%s → %s:%v", podOf[e.From], podOf[e.To], e.Props["port"])
			if got[k] == nil {
				got[k] = &agg{}
			}
			got[k].count += e.Props["count"].(float64)
			got[k].sent += e.Props["bytes_sent"].(float64)
			got[k].recv += e.Props["bytes_received"].(float64)
		}
		for k, w := range want {
			a := got[k]
			if a == nil {
				diffs = append(diffs, fmt.Sprintf("%s %s: missing, want %s", level, k, w))
				continue
			}
			if g := fmt.Sprintf("count %.0f sent %.0f received %.0f", a.count, a.sent, a.recv); g != w {
				diffs = append(diffs, fmt.Sprintf("%s %s: %s, want %s", level, k, g, w))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s %s: in the graph, not in the demo", level, k))
			}
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("%d of %d edges differ from the ground truth:\n%s", len(diffs), len(want), strings.Join(diffs, "\n"))
	}
	return nil
}
