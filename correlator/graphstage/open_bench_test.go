package graphstage_test

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// BenchmarkOpenToGraph: the pipeline in process with default settings —
// embedded NATS, the correlator, the graph stage with the embedded store
// — while a poller reads GET /api/v1/graph every 5 ms, for 10 s:
//
//   - open-…: 20 connections/s opened and left open (their connect and
//     accept as the collector's sweep reports them), on 10 edges: from
//     publishing a connection's two sides to the first poll that counts it;
//   - bytes-…: every open connection's progress (both sides) each second:
//     from publishing it to the first poll whose edge bytes include it —
//     the pipeline's share of an open edge's byte lag, to which the
//     collector adds at most its progressInterval (default 1 s);
//   - close-… (the baseline, same run): 2,000 short connections/s on 10
//     other edges, each published as the collector reports one (connect,
//     accept and close together): from publishing to the poll that
//     counts it.
func BenchmarkOpenToGraph(b *testing.B) {
	const (
		tick      = 100 * time.Millisecond
		feed      = 10 * time.Second
		openRate  = 20
		closeRate = 2000
		edges     = 10
		poll      = 5 * time.Millisecond
	)
	p := startPipeline(b)
	s, cor, gs, web := p.s, p.cor, p.gs, p.web

	sim := scenario.New()
	pod := func(i int, node, role string) scenario.Proc {
		ctr := &schema.Container{Id: fmt.Sprintf("ctr-%s-%d", role, i), Name: role}
		p := &schema.Pod{Uid: fmt.Sprintf("uid-%s-%d", role, i), Name: fmt.Sprintf("%s-%d", role, i), Namespace: "shop", Node: node,
			Ips: []string{fmt.Sprintf("10.%d.0.%d", len(role), 10+i)}, Containers: []*schema.Container{ctr}}
		sim.PodUp(uint64(time.Now().UnixNano()), p)
		return scenario.Proc{Node: node, Pod: p, Container: ctr, Pid: uint32(100 + i), Exe: "/" + role}
	}
	// Edges 0..9 carry long connections, 10..19 short ones.
	var cli []scenario.Proc
	srv := pod(0, "node-b", "broker")
	edgeOf := map[string]int{}
	for i := range 2 * edges {
		cli = append(cli, pod(i, "node-a", "app"))
		edgeOf["Pod:"+cli[i].Pod.GetUid()] = i
	}
	stagetest.PublishEvents(b, s.JS, sim.Drain(1024))
	natstest.CheckFor(b, 10*time.Second, 10*time.Millisecond, func() error {
		if n := cor.Stats().Pods; n < 2*edges+1 {
			return fmt.Errorf("correlator knows %d pods", n)
		}
		return nil
	})

	opens := &arrivals{sent: make([][]time.Time, edges), seen: map[string][]int{"open": make([]int, edges)}, lat: map[string][]time.Duration{}}
	closes := &arrivals{sent: make([][]time.Time, edges), seen: map[string][]int{"close": make([]int, edges)}, lat: map[string][]time.Duration{}}
	// Bytes: per long edge, the cumulative bytes_sent each progress
	// brings the edge to, with when it was published.
	type mark struct {
		bytes uint64
		at    time.Time
	}
	var bmu sync.Mutex
	marks := make([][]mark, edges)
	var byteLat []time.Duration
	var total [edges]uint64

	defer pollGraph(web.URL, poll, func(g graph.Graph, now time.Time) {
		for _, e := range g.Edges {
			i, ok := edgeOf[e.From]
			if !ok || e.Type != graph.RelCalls || e.To != "Pod:"+srv.Pod.GetUid() {
				continue
			}
			n, _ := e.Props["count"].(float64)
			if i < edges {
				opens.saw("open", i, int(n), now)
				sent, _ := e.Props["bytes_sent"].(float64)
				bmu.Lock()
				for len(marks[i]) > 0 && marks[i][0].bytes <= uint64(sent) {
					byteLat = append(byteLat, now.Sub(marks[i][0].at))
					marks[i] = marks[i][1:]
				}
				bmu.Unlock()
			} else {
				closes.saw("close", i-edges, int(n), now)
			}
		}
	})()

	var open []*scenario.Open
	var openEdge []int
	k, port := 0, 20000
	srvAddr := netip.AddrPortFrom(netip.MustParseAddr(srv.Pod.GetIps()[0]), 4222)
	for b.Loop() {
		t := time.NewTicker(tick)
		lastProgress := time.Now()
		for end := time.Now().Add(feed); time.Now().Before(end); <-t.C {
			t0 := time.Now()
			now := uint64(t0.UnixNano())
			for range openRate * int(tick) / int(time.Second) {
				e := k % edges
				c := cli[e]
				port++
				o := sim.OpenTCP(scenario.Conn{Client: c, Server: srv, ClientAddr: netip.AddrPortFrom(netip.MustParseAddr(c.Pod.GetIps()[0]), uint16(port)),
					ServerAddr: srvAddr, Start: now - uint64(300*time.Millisecond)}, now)
				open, openEdge = append(open, o), append(openEdge, e)
				opens.publish(e, t0)
				k++
			}
			for range closeRate * int(tick) / int(time.Second) {
				e := edges + k%edges
				c := cli[e]
				port++
				sim.TCP(scenario.Conn{Client: c, Server: srv, ClientAddr: netip.AddrPortFrom(netip.MustParseAddr(c.Pod.GetIps()[0]), uint16(20000+port%40000)),
					ServerAddr: srvAddr, Start: now - 3e6, Dur: 2e6, Sent: 100, Received: 200})
				closes.publish(e-edges, t0)
				k++
			}
			if t0.Sub(lastProgress) >= time.Second {
				lastProgress = t0
				bmu.Lock()
				for i, o := range open {
					o.Progress(now, 10, 20)
					total[openEdge[i]] += 10
					marks[openEdge[i]] = append(marks[openEdge[i]], mark{total[openEdge[i]], t0})
				}
				bmu.Unlock()
			}
			stagetest.PublishEvents(b, s.JS, sim.Drain(1024))
		}
		t.Stop()
		natstest.CheckFor(b, 30*time.Second, 10*time.Millisecond, func() error {
			if n := opens.missing("open") + closes.missing("close"); n > 0 {
				return fmt.Errorf("%d of %d connections not in the graph (correlator %+v, graph %+v)", n, k, cor.Stats(), gs.Stats())
			}
			bmu.Lock()
			defer bmu.Unlock()
			for i, m := range marks {
				if len(m) > 0 {
					return fmt.Errorf("edge %d: %d progress not in the graph", i, len(m))
				}
			}
			return nil
		})
	}
	opens.report(b, "open")
	closes.report(b, "close")
	bmu.Lock()
	lat := byteLat
	bmu.Unlock()
	if len(lat) == 0 {
		b.Fatal("bytes: no progress seen")
	}
	sortDurations(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "bytes-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "bytes-p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, "bytes-max-ms")
}

func sortDurations(d []time.Duration) { slices.Sort(d) }
