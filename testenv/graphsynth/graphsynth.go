// Package graphsynth makes a synthetic graph of a given size as one
// graph.Batch — machines, namespaces of workloads and their pods, some
// pods with two containers talking over a unix socket, brokers, and
// CALLS between pods — for measuring the service map and the HTTP API on
// a graph bigger than the demo's (docs/servicemap.md).
package graphsynth

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/weftobs/weft/correlator/graph"
)

// Size is what Batch makes.
type Size struct {
	Machines, Namespaces, Workloads, Pods int
	// SidecarPods have two containers calling each other over a unix
	// socket (two nodes and one CALLS each, within Nodes and Calls).
	SidecarPods int
	// Calls is the number of CALLS relationships (unix ones included).
	Calls int
}

// Big is 5,000 nodes and 20,000 CALLS: 20 machines, 480 workloads in 24
// namespaces, 4,000 pods, 500 containers.
var Big = Size{Machines: 20, Namespaces: 24, Workloads: 480, Pods: 4000, SidecarPods: 250, Calls: 20000}

// Nodes is how many graph nodes s makes.
func (s Size) Nodes() int { return s.Machines + s.Workloads + s.Pods + 2*s.SidecarPods }

// Batch makes s at time now (Unix ns: calls were last seen within the
// hour before it), the same for the same seed.
func Batch(s Size, seed uint64, now int64) *graph.Batch {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := &graph.Batch{Seq: 1}
	machine := func(i int) graph.Ref { return graph.Ref{Label: graph.LabelNode, K1: fmt.Sprintf("node-%02d", i)} }
	for i := range s.Machines {
		b.Entities = append(b.Entities, graph.Entity{Ref: machine(i), Props: map[string]string{}})
	}
	workloads := make([]graph.Ref, s.Workloads)
	for i := range workloads {
		ns := fmt.Sprintf("team-%02d", i%s.Namespaces)
		workloads[i] = graph.Ref{Label: graph.LabelWorkload, K1: "Deployment", K2: ns, K3: fmt.Sprintf("svc-%03d", i)}
		b.Entities = append(b.Entities, graph.Entity{Ref: workloads[i], Props: map[string]string{}})
	}
	pods := make([]graph.Ref, s.Pods)
	for i := range pods {
		w := workloads[i%s.Workloads]
		pods[i] = graph.Ref{Label: graph.LabelPod, K1: fmt.Sprintf("pod-uid-%05d", i)}
		e := graph.Entity{Ref: pods[i], Props: map[string]string{
			"name": w.K3 + "-" + strconv.Itoa(i/s.Workloads), "namespace": w.K2, "ip": fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
		}}
		if i%s.Workloads < 4 { // the first four workloads are brokers
			e.Broker = []string{"kafka", "nats", "rabbitmq", "redis"}[i%s.Workloads]
		}
		b.Entities = append(b.Entities, e)
		b.Links = append(b.Links,
			graph.Link{Type: graph.RelOwns, From: w, To: pods[i]},
			graph.Link{Type: graph.RelRunsOn, From: pods[i], To: machine(i % s.Machines)})
	}
	edge := func(k graph.EdgeKey) graph.EdgeDelta {
		last := now - rng.Int64N(int64(3600e9))
		n := 1 + rng.Uint64N(10000)
		d := graph.EdgeDelta{EdgeKey: k, Count: n, BytesSent: n * (100 + rng.Uint64N(4000)), BytesReceived: n * (100 + rng.Uint64N(40000)),
			FirstSeen: last - rng.Int64N(int64(86400e9)), LastSeen: last}
		if rng.IntN(20) == 0 {
			d.Errors = 1 + rng.Uint64N(n)
		}
		return d
	}
	for i := range s.SidecarPods {
		app := graph.Ref{Label: graph.LabelContainer, K1: fmt.Sprintf("%064x", 2*i)}
		side := graph.Ref{Label: graph.LabelContainer, K1: fmt.Sprintf("%064x", 2*i+1)}
		b.Entities = append(b.Entities,
			graph.Entity{Ref: app, Props: map[string]string{"name": "app", "image": "synthetic/app:1"}},
			graph.Entity{Ref: side, Props: map[string]string{"name": "proxy", "image": "synthetic/proxy:1"}})
		b.Links = append(b.Links,
			graph.Link{Type: graph.RelHasContainer, From: pods[i], To: app},
			graph.Link{Type: graph.RelHasContainer, From: pods[i], To: side})
		b.Edges = append(b.Edges, edge(graph.EdgeKey{From: app, To: side, Transport: "unix", Path: "/run/proxy.sock"}))
	}
	seen := map[graph.EdgeKey]bool{}
	for len(b.Edges) < s.Calls {
		from, to := pods[rng.IntN(s.Pods)], pods[rng.IntN(s.Pods)]
		if rng.IntN(4) == 0 { // a quarter of the calls go to brokers
			to = pods[rng.IntN(4)+s.Workloads*rng.IntN(s.Pods/s.Workloads)]
		}
		k := graph.EdgeKey{From: from, To: to, Transport: "tcp", Port: []uint32{80, 443, 8080, 9092, 4222, 5672, 6379}[rng.IntN(7)]}
		if from == to || seen[k] {
			continue
		}
		seen[k] = true
		b.Edges = append(b.Edges, edge(k))
	}
	for _, e := range b.Edges {
		b.Calls += e.Count
	}
	return b
}
