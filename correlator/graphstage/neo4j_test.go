package graphstage_test

// The graph stage on Neo4j: run against a real Neo4j, the package's own
// or the one WEFT_NEO4J_URI names. Each test wipes its database first; see package
// neo4jtest for what they do to it and when they refuse to.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// neo4jSettings are graphSettings with the store on Neo4j.
func neo4jSettings(t *testing.T, cfg neo4jstore.Config, replay *stage.Replay) stage.Settings {
	set := graphSettings(t.TempDir(), replay)
	gc := set.Config.(*graphstage.Config)
	gc.Store, gc.Neo4j = graphstage.StoreNeo4j, cfg
	return set
}

// served is st's graph as /api/v1/graph would serve it (numbers decoded
// as JSON numbers), for podEdges.
func served(t *testing.T, st *neo4jstore.Store) *graph.Graph {
	t.Helper()
	data, err := json.Marshal(neo4jtest.Graph(t, st))
	if err != nil {
		t.Fatal(err)
	}
	var g graph.Graph
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// clusterEvents starts NATS with weft's streams and returns it with the
// two-node cluster scenario of rounds rounds: its ground truth and its
// events, as the collectors publish them.
func clusterEvents(t *testing.T, rounds int) (*natstest.Server, *scenario.Sim, []*schema.EventBatch) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, rounds, 3e6)
	return s, sim, sim.Interleaved(8)
}

// waitSeq waits until st has applied CALLS up to seq.
func waitSeq(t *testing.T, st graph.Store, seq uint64) {
	t.Helper()
	natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		n, err := st.LastSeq(context.Background())
		if err == nil && n < seq {
			err = fmt.Errorf("store at CALLS sequence %d, want %d", n, seq)
		}
		return err
	})
}

// startErr starts a graph stage that must refuse to start.
func startErr(t *testing.T, h *stagetest.Host, set stage.Settings) error {
	t.Helper()
	st, err := graphstage.New(set)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Start(context.Background(), h)
	if err == nil {
		_ = st.Shutdown(context.Background())
	}
	return err
}

// TestNeo4jCrashBetweenWriteAndAck mirrors TestEndToEnd's kill on Neo4j,
// made certain to crash between a write and its acks: the first graph
// stage holds every message (no timed write), its connection is cut, and
// its shutdown writes the batch to Neo4j while the acks have nowhere to
// go. The restarted stage makes its consumer anew from Neo4j's sequence
// on, so it neither waits for the unacked messages' AckWait nor counts
// them again: the graph equals the ground truth.
func TestNeo4jCrashBetweenWriteAndAck(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	s, sim, batches := clusterEvents(t, 200)
	half := len(batches) / 2
	stagetest.PublishEvents(t, s.JS, batches[:half])

	nc1, js1 := stagetest.Connect(t, s)
	h1 := stagetest.NewHost(js1)
	cor1 := startCorrelator(t, h1)
	set1 := neo4jSettings(t, cfg, nil)
	hold := set1.Config.(*graphstage.Config)
	hold.FlushInterval, hold.MaxPendingMessages = time.Hour, 1<<20
	g1 := startGraph(t, h1, set1)
	waitCalls(t, g1, 100)
	nc1.Close()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = cor1.Shutdown(dead)
	live, cancelLive := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLive()
	_ = g1.Shutdown(live) // the write lands; the acks fail on the closed connection

	written, err := st.LastSeq(live)
	if err != nil || written == 0 || g1.Stats().Batches != 1 {
		t.Fatalf("before the crash: Neo4j at CALLS sequence %d (%v) after %d batches; want one batch written", written, err, g1.Stats().Batches)
	}
	durable := consume.DurableName("graph", schema.StreamCalls) + "-neo4j"
	cons, err := s.JS.Consumer(live, schema.StreamCalls, durable)
	if err != nil {
		t.Fatal(err)
	}
	ackFloor := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.AckFloor.Stream
	}
	if f := ackFloor(); f >= written {
		t.Fatalf("acks reached the server (ack floor %d, written up to %d): no crash between write and ack to test", f, written)
	}

	stagetest.PublishEvents(t, s.JS, batches[half:])
	_, js2 := stagetest.Connect(t, s)
	h2 := stagetest.NewHost(js2)
	cor2 := startCorrelator(t, h2)
	defer cor2.Shutdown(context.Background())
	g2 := startGraph(t, h2, neo4jSettings(t, cfg, nil))
	defer g2.Shutdown(context.Background())
	cons, err = s.JS.Consumer(live, schema.StreamCalls, durable)
	if err != nil {
		t.Fatal(err)
	}
	if info := cons.CachedInfo(); info.Config.OptStartSeq != written+1 {
		t.Fatalf("the restarted stage's consumer starts at CALLS %d, want %d (after what Neo4j holds)", info.Config.OptStartSeq, written+1)
	}
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(served(t, st)))
	})
	if g := g2.Stats(); g.Skipped != 0 || g.Rehold != 0 {
		t.Errorf("restarted stage %+v: it was given messages Neo4j holds", g)
	}
	t.Logf("written before the crash up to CALLS %d; restarted stage %+v", written, g2.Stats())
}

// TestNeo4jReplayEquality: the graph built live in Neo4j equals the one a
// replay of CALLS builds in the embedded store and the one it builds in an
// emptied Neo4j (compared as the export's JSON); a replay refuses a
// database that holds a graph, or only the cursor of a deleted one.
func TestNeo4jReplayEquality(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	s, sim, batches := clusterEvents(t, 100)
	stagetest.PublishEvents(t, s.JS, batches)

	h1 := stagetest.NewHost(s.JS)
	cor := startCorrelator(t, h1)
	g1 := startGraph(t, h1, neo4jSettings(t, cfg, nil))
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(served(t, st)))
	})
	if err := cor.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The live graph is CALLS up to last; the replays stop there too.
	last, err := st.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	live := neo4jtest.Graph(t, st)
	upToLast := func(durable string) *stage.Replay {
		return &stage.Replay{Durable: durable, StartSeq: 1, UntilSeq: last}
	}

	h2 := stagetest.NewHost(s.JS)
	emb := startGraph(t, h2, graphSettings(t.TempDir(), upToLast("replay-embedded")))
	defer emb.Shutdown(context.Background())
	waitSeq(t, emb.Store(), last)
	if err := neo4jtest.Compare(live, neo4jtest.Graph(t, emb.Store().(graph.Reader))); err != nil {
		t.Errorf("the embedded store's replay is not the live Neo4j graph: %v", err)
	}

	replay := func(durable string) stage.Settings { return neo4jSettings(t, cfg, upToLast(durable)) }
	if err := startErr(t, h2, replay("replay-full")); err == nil || !strings.Contains(err.Error(), "replay needs an empty graph") {
		t.Errorf("replay into the live graph's database: %v; want it refused", err)
	}
	neo4jtest.Exec(t, cfg, "MATCH (n) WHERE n:Node OR n:Pod OR n:Container OR n:Workload OR n:Process OR n:External DETACH DELETE n", nil)
	if err := startErr(t, h2, replay("replay-cursor")); err == nil || !strings.Contains(err.Error(), "replay needs an empty graph") {
		t.Errorf("replay into a database with a deleted graph's cursor: %v; want it refused", err)
	}

	neo4jtest.Reset(t, cfg)
	neo4jtest.Migrate(t, st)
	g3 := startGraph(t, h2, replay("replay-neo4j"))
	defer g3.Shutdown(context.Background())
	waitSeq(t, st, last)
	if err := neo4jtest.Compare(live, neo4jtest.Graph(t, st)); err != nil {
		t.Errorf("the replay into an empty Neo4j is not the live graph: %v", err)
	}
}

// TestNeo4jAwayLongerThanAckWait: Neo4j stops and stays away for several
// AckWaits (2s here) while every call of the scenario flows, then starts
// again on the same database. Meanwhile the stage holds every message it
// folded (marked in progress, never acked: the consumer's ack floor stays
// at what Neo4j had committed); once Neo4j is back the graph equals the
// ground truth exactly — counts, bytes, errors: nothing lost, nothing
// doubled.
//
// The events are published only once Neo4j is down: the correlator must
// see them without a pause, or a connection cut by the pause would end as
// two lone halves, which is not this test's business.
func TestNeo4jAwayLongerThanAckWait(t *testing.T) {
	cfg, srv := neo4jtest.Own(t)
	st := neo4jtest.Open(t, cfg)
	neo4jtest.Migrate(t, st)
	s, sim, batches := clusterEvents(t, 300)

	h := stagetest.NewHost(s.JS)
	cor := startCorrelator(t, h)
	defer cor.Shutdown(context.Background())
	set := neo4jSettings(t, cfg, nil)
	const ackWait = 2 * time.Second
	set.Config.(*graphstage.Config).AckWait = ackWait
	g := startGraph(t, h, set)
	defer g.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
	defer cancel()
	committed, err := st.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	stagetest.PublishEvents(t, s.JS, batches)
	cons, err := s.JS.Consumer(ctx, schema.StreamCalls, consume.DurableName("graph", schema.StreamCalls)+"-neo4j")
	if err != nil {
		t.Fatal(err)
	}
	// Away until calls were folded and every one delivered is, and for
	// three AckWaits at least, so an unmarked message would have been
	// redelivered.
	natstest.CheckFor(t, 2*time.Minute, 100*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		gs := g.Stats()
		switch {
		case gs.Folded == 0 || gs.Folded < info.Delivered.Stream:
			return fmt.Errorf("stage folded up to CALLS %d, %d delivered", gs.Folded, info.Delivered.Stream)
		case time.Since(stopped) < 3*ackWait:
			return fmt.Errorf("Neo4j away for %v, want at least %v", time.Since(stopped), 3*ackWait)
		}
		return nil
	})
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gs := g.Stats()
	if info.AckFloor.Stream > committed || gs.Applied != committed || gs.InProgress == 0 {
		t.Fatalf("while Neo4j was away: ack floor CALLS %d, stage %+v, Neo4j committed up to %d before it stopped; "+
			"want nothing acked past it and held messages marked in progress", info.AckFloor.Stream, gs, committed)
	}
	t.Logf("Neo4j away %v: folded up to CALLS %d, %d acks pending, %d redelivered, stage %+v",
		time.Since(stopped).Round(time.Second), gs.Folded, info.NumAckPending, info.NumRedelivered, gs)

	if _, err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(served(t, st)))
	})
	natstest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err == nil && (info.NumAckPending > 0 || info.AckFloor.Stream < g.Stats().Folded) {
			err = fmt.Errorf("after Neo4j came back: %d acks pending, ack floor %d, folded up to %d", info.NumAckPending, info.AckFloor.Stream, g.Stats().Folded)
		}
		return err
	})
}

// TestNeo4jStageKilledWhileNeo4jAway: the graph stage runs in its own
// process; Neo4j stops, every call of the scenario flows, and the stage
// folds them and holds them (its writes blocked, retried) for three
// AckWaits; then it is SIGKILLed in the middle of that batch. Neo4j starts
// again, a new stage process starts: it reads CALLS again from what Neo4j
// committed, and the graph equals the ground truth exactly.
func TestNeo4jStageKilledWhileNeo4jAway(t *testing.T) {
	cfg, srv := neo4jtest.Own(t)
	st := neo4jtest.Open(t, cfg)
	neo4jtest.Migrate(t, st)
	s, sim, batches := clusterEvents(t, 300)
	h := stagetest.NewHost(s.JS)
	cor := startCorrelator(t, h)
	defer cor.Shutdown(context.Background())
	const ackWait = 2 * time.Second
	child := startChild(t, cfg, s.URL(), ackWait)

	ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	stagetest.PublishEvents(t, s.JS, batches)
	cons, err := s.JS.Consumer(ctx, schema.StreamCalls, consume.DurableName("graph", schema.StreamCalls)+"-neo4j")
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 2*time.Minute, 100*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		switch {
		case err != nil:
			return err
		case info.Delivered.Stream == 0 || info.NumPending > 0:
			return fmt.Errorf("delivered up to CALLS %d, %d to go", info.Delivered.Stream, info.NumPending)
		case time.Since(stopped) < 3*ackWait:
			return fmt.Errorf("Neo4j away for %v, want at least %v", time.Since(stopped), 3*ackWait)
		}
		return nil
	})
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 0 {
		t.Fatalf("while Neo4j was away the stage acked up to CALLS %d, Neo4j committed nothing", info.AckFloor.Stream)
	}
	kill(child)
	t.Logf("killed the stage after %v with Neo4j away: %d messages delivered, %d acks pending, %d redelivered",
		time.Since(stopped).Round(time.Second), info.Delivered.Stream, info.NumAckPending, info.NumRedelivered)

	if _, err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	startChild(t, cfg, s.URL(), ackWait)
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(served(t, st)))
	})
}
