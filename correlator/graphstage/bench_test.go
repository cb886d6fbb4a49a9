package graphstage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/correlate"
	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// publishCalls writes n calls of a fleet with edges pod pairs to CALLS as
// the correlator does (its publisher, one subject per client node) and
// returns the stream's last sequence.
func publishCalls(b *testing.B, s *natstest.Server, n, edges int) uint64 {
	ctx := context.Background()
	pub, err := publish.New(s.NC, publish.Config{Stage: "correlator", Node: "bench", Type: &schema.CallBatch{}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	f := scenario.NewFleet(edges)
	c := &schema.Call{}
	for i := range n {
		f.Call(i, c)
		if err := pub.Publish(ctx, schema.CallSubject(c.GetClient().GetNode()), c); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		b.Fatal(err)
	}
	st, err := s.JS.Stream(ctx, schema.StreamCalls)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("CALLS: %d calls in %d messages, %d MiB", n, info.State.Msgs, info.State.Bytes>>20)
	return info.State.LastSeq
}

// BenchmarkReplayStream: 1,000,000 calls shaped as the correlator emits
// them, in a file-backed CALLS stream of an embedded NATS server, replayed
// the way `weft replay --stream CALLS --to graph` does it (the graph stage
// with default settings under a replay durable, into an empty embedded
// store) until the store holds every call. Baselines from the same
// stream, through the same consumer code: reading and acking every
// message (read), and that plus decoding it with the generated protobuf
// code (decode), what any consumer of CALLS pays.
func BenchmarkReplayStream(b *testing.B) {
	const calls = 1_000_000
	s := natstest.Start(b)
	stagetest.Streams(b, s)
	last := publishCalls(b, s, calls, 1000)
	runs := 0
	baseline := func(name string, decode bool) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				runs++
				done := make(chan struct{})
				var n uint64
				h := func(_ context.Context, m jetstream.Msg) error {
					if decode {
						if _, err := schema.DecodeCallBatch(m.Data()); err != nil {
							return consume.Permanent(err)
						}
					}
					if meta, _ := m.Metadata(); meta != nil && meta.Sequence.Stream == last {
						close(done)
					}
					n++
					return nil
				}
				cons, err := consume.Start(context.Background(), s.JS, consume.Config{Stage: "baseline", Stream: schema.StreamCalls,
					Durable: fmt.Sprintf("baseline-%d", runs), PullBatch: 64, MaxAckPending: 2048, Replay: &stage.Replay{StartSeq: 1}}, h, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				<-done
				if err := cons.Stop(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/1M-calls")
			b.ReportMetric(float64(calls*b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
	baseline("baseline-read", false)
	baseline("baseline-decode", true)
	b.Run("replay", func(b *testing.B) {
		for b.Loop() {
			runs++
			set := stage.Settings{Name: "graph", Kind: "graph", Node: "ctl", DataDir: b.TempDir(),
				Replay: &stage.Replay{Durable: fmt.Sprintf("replay-%d", runs), StartSeq: 1, UntilSeq: last},
				Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: graphstage.NewConfig(), Counters: &stage.Counters{}}
			st := startGraph(b, stagetest.NewHost(s.JS), set)
			for {
				if seq, _ := st.Store().LastSeq(context.Background()); seq >= last {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			if got := st.Stats(); got.Calls != calls {
				b.Fatalf("stage folded %d calls, want %d (%+v)", got.Calls, calls, got)
			}
			if err := st.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/1M-calls")
		b.ReportMetric(float64(calls*b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}

// arrivals matches what a watcher sees (counts per edge) with when each
// call was published: a count rising from n to m on an edge makes its
// calls n+1…m visible, each with the latency from its own publication.
type arrivals struct {
	mu   sync.Mutex
	sent [][]time.Time // per edge, the publication of each call
	seen map[string][]int
	lat  map[string][]time.Duration
}

func (a *arrivals) publish(edge int, t time.Time) {
	a.mu.Lock()
	a.sent[edge] = append(a.sent[edge], t)
	a.mu.Unlock()
}

// saw records that watcher saw count calls on edge at t.
func (a *arrivals) saw(watcher string, edge, count int, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := a.seen[watcher]
	for ; seen[edge] < count && seen[edge] < len(a.sent[edge]); seen[edge]++ {
		a.lat[watcher] = append(a.lat[watcher], t.Sub(a.sent[edge][seen[edge]]))
	}
}

// missing is how many calls published watcher has not seen.
func (a *arrivals) missing(watcher string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for e, ts := range a.sent {
		n += len(ts) - a.seen[watcher][e]
	}
	return n
}

// report takes the latencies watcher recorded and reports their
// percentiles in milliseconds.
func (a *arrivals) report(b *testing.B, watcher string) {
	a.mu.Lock()
	lat := a.lat[watcher]
	a.lat[watcher] = nil
	a.mu.Unlock()
	if len(lat) == 0 {
		b.Fatalf("%s: no call seen", watcher)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(lat[len(lat)/2]), watcher+"-p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), watcher+"-p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), watcher+"-max-ms")
}

// BenchmarkCloseToGraph: the pipeline in process with default settings —
// embedded NATS, the correlator, the graph stage with the embedded store
// — fed the connect, accept and close events of 5,000 calls/s for 10 s
// between 20 client pods on one node and 5 server pods on another, while
// a poller reads GET /api/v1/graph over HTTP every 5 ms. For each call,
// the time from publishing its connection's last close (the feeder's
// tick, before its events are published) to the first poll that counts
// it: graph-p50/p99/max. The same for the call's arrival on CALLS, seen by
// a plain subscriber (calls-…): the correlator's share of the way, the
// baseline the graph stage adds to.
func BenchmarkCloseToGraph(b *testing.B) {
	const (
		rate    = 5000
		tick    = 10 * time.Millisecond
		feed    = 10 * time.Second
		clients = 20
		servers = 5
		poll    = 5 * time.Millisecond
	)
	p := startPipeline(b)
	s, cor, web := p.s, p.cor, p.web

	// The cluster, announced before any traffic.
	sim := scenario.New()
	pod := func(i int, node, role string) scenario.Proc {
		ctr := &schema.Container{Id: fmt.Sprintf("ctr-%s-%d", role, i), Name: role, Image: "example/" + role + ":1"}
		p := &schema.Pod{Uid: fmt.Sprintf("uid-%s-%d", role, i), Name: fmt.Sprintf("%s-%d", role, i), Namespace: "shop", Node: node,
			Ips: []string{fmt.Sprintf("10.%d.0.%d", len(role), 10+i)}, Containers: []*schema.Container{ctr},
			Owners:   []*schema.OwnerRef{{Kind: "ReplicaSet", Name: role + "-7d9f8c", Controller: true}},
			Workload: &schema.OwnerRef{Kind: "Deployment", Name: role, Controller: true}}
		sim.PodUp(uint64(time.Now().UnixNano()), p)
		return scenario.Proc{Node: node, Pod: p, Container: ctr, Pid: uint32(100 + i), Exe: "/" + role}
	}
	var cli, srv []scenario.Proc
	edgeOf := map[[2]string]int{}
	for i := range clients {
		cli = append(cli, pod(i, "node-a", "app"))
	}
	for i := range servers {
		srv = append(srv, pod(i, "node-b", "db"))
	}
	for i := range clients {
		edgeOf[[2]string{"Pod:" + cli[i].Pod.GetUid(), "Pod:" + srv[i%servers].Pod.GetUid()}] = i
	}
	stagetest.PublishEvents(b, s.JS, sim.Drain(1024))
	natstest.CheckFor(b, 10*time.Second, 10*time.Millisecond, func() error {
		if n := cor.Stats().Pods; n < clients+servers {
			return fmt.Errorf("correlator knows %d pods", n)
		}
		return nil
	})

	arr := &arrivals{sent: make([][]time.Time, clients), seen: map[string][]int{"graph": make([]int, clients), "calls": make([]int, clients)},
		lat: map[string][]time.Duration{}}
	edgeByClient := map[string]int{}
	for i, p := range cli {
		edgeByClient[p.Pod.GetUid()] = i
	}
	calls := map[int]int{}
	sub, err := s.NC.Subscribe(schema.CallsPrefix+">", func(m *nats.Msg) {
		cb, err := schema.DecodeCallBatch(m.Data)
		if err != nil {
			return
		}
		now := time.Now()
		for _, c := range cb.GetCalls() {
			if e, ok := edgeByClient[c.GetClient().GetPod().GetUid()]; ok {
				calls[e]++
				arr.saw("calls", e, calls[e], now)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()

	defer pollGraph(web.URL, poll, func(g graph.Graph, now time.Time) {
		for _, e := range g.Edges {
			if i, ok := edgeOf[[2]string{e.From, e.To}]; ok && e.Type == graph.RelCalls {
				n, _ := e.Props["count"].(float64)
				arr.saw("graph", i, int(n), now)
			}
		}
	})()

	k := 0
	for b.Loop() {
		t := time.NewTicker(tick)
		for end := time.Now().Add(feed); time.Now().Before(end); <-t.C {
			t0 := time.Now()
			start := uint64(t0.UnixNano()) - 3e6
			for range rate * int(tick) / int(time.Second) {
				e := k % clients
				c, sv := cli[e], srv[e%servers]
				port := uint16(20000 + k%40000)
				sim.TCP(scenario.Conn{Client: c, Server: sv,
					ClientAddr: netip.AddrPortFrom(netip.MustParseAddr(c.Pod.GetIps()[0]), port),
					ServerAddr: netip.AddrPortFrom(netip.MustParseAddr(sv.Pod.GetIps()[0]), 5432),
					Start:      start, Dur: 2e6, Sent: 100, Received: 200})
				arr.publish(e, t0)
				k++
			}
			stagetest.PublishEvents(b, s.JS, sim.Drain(1024))
		}
		t.Stop()
		natstest.CheckFor(b, 30*time.Second, 10*time.Millisecond, func() error {
			if n := arr.missing("graph"); n > 0 {
				return fmt.Errorf("%d of %d calls not in the graph", n, k)
			}
			return nil
		})
	}
	arr.report(b, "graph")
	arr.report(b, "calls")
	b.ReportMetric(float64(k)/b.Elapsed().Seconds(), "calls/s")
}

// BenchmarkReplayNeo4j: calls shaped as the correlator emits them, in a
// file-backed CALLS stream of an embedded NATS server, replayed as `weft
// replay --stream CALLS --to graph` does it (the graph stage, default
// settings, under a replay durable) into an empty, migrated Neo4j
// (neo4j), against the same replay into an empty embedded store
// (embedded), same stream, same run; and each again with a retention
// (+retention: counts kept per retention bucket, in Neo4j a
// WEFT_CALLS_BUCKET twin written with every CALLS relationship), for
// what retention costs. Each ends when the store holds the
// stream's last sequence; batches and rows/batch are the stage's.
// WEFT_BENCH_CALLS sets how many calls (default 1,000,000). It skips,
// as the Neo4j tests do, when no Neo4j can be had (package neo4jtest).
func BenchmarkReplayNeo4j(b *testing.B) {
	calls := 1_000_000
	if v := os.Getenv("WEFT_BENCH_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("WEFT_BENCH_CALLS=%q: %v", v, err)
		}
		calls = n
	}
	neo := neo4jtest.Config(b) // skip before the stream is built
	s := natstest.Start(b)
	stagetest.Streams(b, s)
	last := publishCalls(b, s, calls, 1000)
	runs := 0
	for _, v := range []struct {
		store     string
		retention bool
	}{{graphstage.StoreEmbedded, false}, {graphstage.StoreEmbedded, true}, {graphstage.StoreNeo4j, false}, {graphstage.StoreNeo4j, true}} {
		store, name := v.store, v.store
		if v.retention {
			name += "+retention"
		}
		b.Run(name, func(b *testing.B) {
			var batches, rows uint64
			if store == graphstage.StoreNeo4j {
				neo4jtest.Fresh(b) // held until the benchmark ends
			}
			for i := 0; b.Loop(); i++ {
				runs++
				cfg := graphstage.NewConfig()
				if v.retention {
					cfg.Retention = 24 * time.Hour
				}
				if store == graphstage.StoreNeo4j {
					b.StopTimer()
					if i > 0 {
						neo4jtest.Reset(b, neo)
					}
					neo4jtest.Migrate(b, neo4jtest.Open(b, neo))
					b.StartTimer()
					cfg.Store, cfg.Neo4j = graphstage.StoreNeo4j, neo
				}
				set := stage.Settings{Name: "graph", Kind: "graph", Node: "ctl", DataDir: b.TempDir(),
					Replay: &stage.Replay{Durable: fmt.Sprintf("replay-%d", runs), StartSeq: 1, UntilSeq: last},
					Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: cfg, Counters: &stage.Counters{}}
				st := startGraph(b, stagetest.NewHost(s.JS), set)
				natstest.CheckFor(b, 30*time.Minute, 5*time.Millisecond, func() error {
					if seq, err := st.Store().LastSeq(context.Background()); err != nil || seq < last {
						return fmt.Errorf("store at CALLS sequence %d of %d (%v)", seq, last, err)
					}
					return nil
				})
				got := st.Stats()
				if got.Calls != uint64(calls) {
					b.Fatalf("stage folded %d calls, want %d (%+v)", got.Calls, calls, got)
				}
				if ns, ok := st.Store().(*neo4jstore.Store); ok {
					reportTimes(b, ns.Times())
				}
				batches, rows = batches+got.Batches, rows+got.Rows
				if err := st.Shutdown(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/replay")
			b.ReportMetric(float64(calls*b.N)/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(float64(batches)/float64(b.N), "batches")
			b.ReportMetric(float64(rows)/float64(max(batches, 1)), "rows/batch")
		})
	}
}

// reportTimes says where a Neo4j replay's writes spent their time: per
// transaction, the statements' time on the server, their round trips as
// the client saw them, and the whole transaction (session, begin, commit);
// each statement's share goes to the log.
func reportTimes(b *testing.B, t neo4jstore.Times) {
	if t.Transactions == 0 {
		return
	}
	var server, client time.Duration
	names := slices.Sorted(maps.Keys(t.Statements))
	for _, n := range names {
		s := t.Statements[n]
		server, client = server+s.Server, client+s.Client
		b.Logf("%-28s %3d runs %8d rows  server %8.1f ms/tx  round trip %8.1f ms/tx", n, s.Runs, s.Rows,
			ms(s.Server)/float64(t.Transactions), ms(s.Client)/float64(t.Transactions))
	}
	tx := float64(t.Transactions)
	b.ReportMetric(ms(t.Total)/tx, "tx-ms/batch")
	b.ReportMetric(ms(server)/tx, "server-ms/batch")
	b.ReportMetric(ms(client-server)/tx, "wire-ms/batch")
	b.ReportMetric(ms(t.Total-client)/tx, "begin+commit-ms/batch")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// pipeline is a correlator and an embedded-store graph stage on a fresh
// embedded NATS, with the graph's API served.
type pipeline struct {
	s   *natstest.Server
	cor *correlate.Stage
	gs  *graphstage.Stage
	web *httptest.Server
}

// startPipeline starts a pipeline, stopped when b ends.
func startPipeline(b *testing.B) pipeline {
	b.Helper()
	s := natstest.Start(b)
	stagetest.Streams(b, s)
	host := stagetest.NewHost(s.JS)
	cor, err := correlate.New(stage.Settings{Name: "correlator", Node: "ctl", Config: correlate.NewConfig(), Counters: &stage.Counters{},
		Inputs: []stage.Stream{{Name: schema.StreamEvents}}, Outputs: []stage.Stream{{Name: schema.StreamCalls}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := cor.Start(context.Background(), host); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cor.Shutdown(context.Background()) })
	gs := startGraph(b, host, stage.Settings{Name: "graph", Kind: "graph", Node: "ctl", DataDir: b.TempDir(),
		Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: graphstage.NewConfig(), Counters: &stage.Counters{}})
	b.Cleanup(func() { gs.Shutdown(context.Background()) })
	web := httptest.NewServer(host.Mux)
	b.Cleanup(web.Close)
	return pipeline{s: s, cor: cor.(*correlate.Stage), gs: gs, web: web}
}

// pollGraph reads GET url/api/v1/graph every interval, calling saw with
// each graph it decodes and when it had it, until the returned stop.
func pollGraph(url string, interval time.Duration, saw func(g graph.Graph, at time.Time)) (stop func()) {
	done, polled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			resp, err := http.Get(url + "/api/v1/graph")
			if err != nil {
				continue
			}
			var g graph.Graph
			err = json.NewDecoder(resp.Body).Decode(&g)
			resp.Body.Close()
			if err == nil {
				saw(g, time.Now())
			}
		}
	}()
	return func() { close(done); <-polled }
}
