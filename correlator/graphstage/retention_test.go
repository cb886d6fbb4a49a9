package graphstage_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// retentionBucket is the tests' retention bucket: short, so four phases
// of traffic land in four buckets within a second or two.
const retentionBucket = 300 * time.Millisecond

// phases publishes four CALLS messages, each in a retention bucket of its
// own (it waits for the clock to enter the next bucket between them),
// and returns their stream sequences and buckets. The traffic is built
// so a cut after the third phase's start must drop counts from edges
// that go on (app → nats), whole edges (app → x), pods (x), ends given
// before the cut (z's, z called again after it), and keep ends given
// after (y's, whose calls are all before it).
func phases(t *testing.T, js jetstream.JetStream) (seqs []uint64, buckets []int64) {
	t.Helper()
	ctx := context.Background()
	pod := func(uid, name string) *schema.Pod {
		return &schema.Pod{Uid: uid, Name: name, Namespace: "shop", Node: "node-a", Ips: []string{"10.0.0." + fmt.Sprint(len(uid))},
			Workload:   &schema.OwnerRef{Kind: "Deployment", Name: name, Controller: true},
			Containers: []*schema.Container{{Id: "c-" + uid, Name: name}}}
	}
	app, nats, x, y, z := pod("uid-app", "app"), pod("uid-nats", "nats"), pod("uid-x", "x"), pod("uid-y", "y"), pod("uid-z", "z")
	n := 0
	call := func(cli, srv *schema.Pod, port uint32, at time.Time) *schema.Call {
		n++
		id := fmt.Sprintf("call-%d", n)
		start := uint64(at.UnixNano())
		return &schema.Call{Id: id, Halves: []string{id}, Transport: schema.Transport_TRANSPORT_TCP, Port: port,
			BytesSent: uint64(10 * n), BytesReceived: uint64(n), StartUnixNano: start, EndUnixNano: start + 1e6,
			Client: &schema.Endpoint{Node: "node-a", Pod: cli, Container: cli.Containers[0]},
			Server: &schema.Endpoint{Node: "node-a", Pod: srv, Container: srv.Containers[0]}}
	}
	ended := func(p *schema.Pod, at time.Time) *schema.PodEnded {
		return &schema.PodEnded{Pod: p, EndedUnixNano: uint64(at.UnixNano())}
	}
	str, err := js.Stream(ctx, schema.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		now := time.Now()
		b := &schema.CallBatch{SchemaVersion: schema.Version, Origin: &schema.Origin{Node: "node-a", Seq: uint64(i + 1)}}
		switch i {
		case 0:
			b.Calls = []*schema.Call{call(app, nats, 4222, now), call(app, x, 80, now), call(y, nats, 4222, now), call(z, nats, 4222, now)}
			b.PodsEnded = []*schema.PodEnded{ended(x, now), ended(z, now)}
		case 1:
			b.Calls = []*schema.Call{call(app, nats, 4222, now), call(app, nats, 4222, now), call(y, nats, 4222, now)}
		case 2:
			b.Calls = []*schema.Call{call(app, nats, 4222, now)}
		case 3:
			b.Calls = []*schema.Call{call(app, nats, 4222, now), call(app, nats, 4222, now), call(z, nats, 4222, now)}
			b.PodsEnded = []*schema.PodEnded{ended(y, now)}
		}
		stagetest.PublishRaw(t, ctx, js, schema.CallSubject("node-a"), b, fmt.Sprintf("retention-%d", i), len(b.Calls)+len(b.PodsEnded))
		info, err := str.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := str.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			t.Fatal(err)
		}
		bk := m.Time.UnixNano() - m.Time.UnixNano()%int64(retentionBucket)
		if i > 0 && bk <= buckets[i-1] {
			t.Fatalf("phase %d stored in bucket %d, phase %d in %d: want a later one", i, bk, i-1, buckets[i-1])
		}
		seqs, buckets = append(seqs, m.Sequence), append(buckets, bk)
		natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if time.Now().UnixNano() < bk+int64(retentionBucket) {
				return fmt.Errorf("bucket %d not over yet", bk)
			}
			return nil
		})
	}
	return seqs, buckets
}

// retentionSettings are graphSettings with the tests' retention bucket.
func retentionSettings(dir string, replay *stage.Replay) stage.Settings {
	set := graphSettings(dir, replay)
	set.Config.(*graphstage.Config).RetentionBucket = retentionBucket
	return set
}

// callsWithMaxAge creates weft's streams on s, CALLS keeping an hour (so
// the graph's retention defaults to it).
func callsWithMaxAge(t *testing.T, s *natstest.Server) jetstream.Stream {
	t.Helper()
	stagetest.Streams(t, s)
	str, err := s.JS.UpdateStream(context.Background(), jetstream.StreamConfig{Name: schema.StreamCalls, Subjects: []string{"weft.calls.>"},
		Storage: jetstream.FileStorage, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// checkRetained checks a graph cut after the third phase (only the fourth
// kept): the truth of that phase alone.
func checkRetained(t *testing.T, g *graph.Graph, ended map[string]int64) {
	t.Helper()
	nodes := map[string]bool{}
	for _, n := range g.Nodes {
		nodes[n.ID] = true
	}
	for id, want := range map[string]bool{"Pod:uid-app": true, "Pod:uid-nats": true, "Pod:uid-y": true, "Pod:uid-z": true, "Pod:uid-x": false, "Container:c-uid-x": false} {
		if nodes[id] != want {
			t.Errorf("%s in the graph: %v, want %v", id, nodes[id], want)
		}
	}
	counts := map[string]float64{}
	for _, e := range g.Edges {
		if e.Type == graph.RelCalls && e.From[:4] == "Pod:" {
			counts[fmt.Sprintf("%s>%s:%v", e.From[4:], e.To[4:], e.Props["port"])], _ = e.Props["count"].(float64)
		}
	}
	if want := map[string]float64{"uid-app>uid-nats:4222": 2, "uid-z>uid-nats:4222": 1}; !reflect.DeepEqual(counts, want) {
		t.Errorf("pod edges %v, want %v (the last phase's alone)", counts, want)
	}
	if _, ok := ended["Pod:uid-y"]; !ok || len(ended) != 2 || ended["Container:c-uid-y"] != ended["Pod:uid-y"] {
		t.Errorf("ended %v: want y and its container alone (z's end was cut; x is gone)", ended)
	}
}

// TestRetentionReplayEqualsLive: the CALLS stream loses its first
// messages (purged up to the third phase's: as age or size limits drop
// them); the graph stage drops, at its next retention pass, every bucket
// the stream no longer holds whole, and the live graph then equals the
// graph a replay of the stream from the graph's cut builds, node for
// node and count for count, and is what the kept phase alone says.
func TestRetentionReplayEqualsLive(t *testing.T) {
	s := natstest.Start(t)
	str := callsWithMaxAge(t, s)
	h := stagetest.NewHost(s.JS)
	dir := t.TempDir()
	g := startGraph(t, h, retentionSettings(dir, nil))

	seqs, buckets := phases(t, s.JS)
	waitSeqStage(t, g, seqs[3], 10*time.Second)
	full := fetch(t, h)
	if st := g.Stats(); st.RetainedFrom > buckets[0] {
		t.Fatalf("the graph cut at %d with the stream whole (first phase in bucket %d)", st.RetainedFrom, buckets[0])
	}
	for _, e := range full.Edges {
		if e.From == "Pod:uid-app" && e.To == "Pod:uid-nats" && e.Props["count"] != float64(6) {
			t.Fatalf("app → nats before the cut: %v, want count 6", e.Props)
		}
	}
	if err := str.Purge(context.Background(), jetstream.WithPurgeSequence(seqs[2]+1)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := g.Stats().RetainedFrom; got != buckets[3] {
			return fmt.Errorf("graph cut at %d, want %d (the fourth phase's bucket)", got, buckets[3])
		}
		return nil
	})
	live := fetch(t, h)
	if reflect.DeepEqual(live, full) {
		t.Fatal("the cut changed nothing")
	}
	checkRetained(t, live, endedNodes(t, h))
	cut := g.Stats().RetainedFrom

	// A restart loads the snapshot: the same graph, the same cut.
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	h = stagetest.NewHost(s.JS)
	g = startGraph(t, h, retentionSettings(dir, nil))
	defer g.Shutdown(context.Background())
	if got := fetch(t, h); !reflect.DeepEqual(got, live) || g.Stats().RetainedFrom != cut {
		t.Fatalf("restarted: cut at %d (want %d), graph equal: %v", g.Stats().RetainedFrom, cut, reflect.DeepEqual(got, live))
	}

	h2 := stagetest.NewHost(s.JS)
	g2 := startGraph(t, h2, retentionSettings(t.TempDir(), &stage.Replay{Durable: "replay-retained", StartTime: time.Unix(0, cut)}))
	defer g2.Shutdown(context.Background())
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := fetch(t, h2); !reflect.DeepEqual(got, live) {
			return fmt.Errorf("replay from the cut differs from the live graph:\n replay %+v\n live   %+v", got, live)
		}
		return nil
	})
}

// waitSeqStage waits until g has written CALLS up to seq.
func waitSeqStage(t *testing.T, g *graphstage.Stage, seq uint64, timeout time.Duration) {
	t.Helper()
	natstest.CheckFor(t, timeout, 10*time.Millisecond, func() error {
		if got := g.Stats().Applied; got < seq {
			return fmt.Errorf("graph at CALLS %d, want %d", got, seq)
		}
		return nil
	})
}

// TestNeo4jRetentionReplayEqualsLive is TestRetentionReplayEqualsLive
// with the live graph in Neo4j: after the cut it holds the kept phase
// alone (counts summed again from the buckets left), equals the embedded
// store's replay from the cut, and a replay from the cut into an emptied
// Neo4j.
func TestNeo4jRetentionReplayEqualsLive(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	s := natstest.Start(t)
	str := callsWithMaxAge(t, s)
	neoSettings := func(replay *stage.Replay) stage.Settings {
		set := neo4jSettings(t, cfg, replay)
		set.Config.(*graphstage.Config).RetentionBucket = retentionBucket
		return set
	}
	h := stagetest.NewHost(s.JS)
	g := startGraph(t, h, neoSettings(nil))
	defer g.Shutdown(context.Background())

	seqs, buckets := phases(t, s.JS)
	waitSeqStage(t, g, seqs[3], 60*time.Second) // Neo4j compiles each new statement at its first run
	if err := str.Purge(context.Background(), jetstream.WithPurgeSequence(seqs[2]+1)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := g.Stats().RetainedFrom; got != buckets[3] {
			return fmt.Errorf("graph cut at %d, want %d (the fourth phase's bucket)", got, buckets[3])
		}
		return nil
	})
	checkRetained(t, fetch(t, h), endedNodes(t, h))
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if from, err := st.RetainedFrom(context.Background()); err != nil || from != buckets[3] {
		t.Fatalf("Neo4j records the cut %d (%v), want %d", from, err, buckets[3])
	}
	live := neo4jtest.Graph(t, st)
	last, err := st.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	replay := func(durable string) *stage.Replay {
		return &stage.Replay{Durable: durable, StartTime: time.Unix(0, buckets[3]), UntilSeq: last}
	}

	h2 := stagetest.NewHost(s.JS)
	emb := startGraph(t, h2, retentionSettings(t.TempDir(), replay("replay-retained-embedded")))
	defer emb.Shutdown(context.Background())
	waitSeq(t, emb.Store(), last)
	if err := neo4jtest.Compare(live, neo4jtest.Graph(t, emb.Store().(graph.Reader))); err != nil {
		t.Errorf("the embedded replay from the cut is not the live Neo4j graph: %v", err)
	}

	neo4jtest.Reset(t, cfg)
	neo4jtest.Migrate(t, st)
	g3 := startGraph(t, stagetest.NewHost(s.JS), neoSettings(replay("replay-retained-neo4j")))
	defer g3.Shutdown(context.Background())
	waitSeq(t, st, last)
	if err := neo4jtest.Compare(live, neo4jtest.Graph(t, st)); err != nil {
		t.Errorf("the replay from the cut into an empty Neo4j is not the live graph: %v", err)
	}
}

// TestRetentionLongerThanStreamRefused: a retention the stream does not
// keep is refused at start, saying both and what to set; a bucket longer
// than the retention is refused by Validate.
func TestRetentionLongerThanStreamRefused(t *testing.T) {
	s := natstest.Start(t)
	callsWithMaxAge(t, s)
	set := graphSettings(t.TempDir(), nil)
	set.Config.(*graphstage.Config).Retention = 2 * time.Hour
	st, err := graphstage.New(set)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Start(context.Background(), stagetest.NewHost(s.JS))
	if err == nil || !strings.Contains(err.Error(), "retention 2h0m0s exceeds stream CALLS's max age 1h0m0s") || !strings.Contains(err.Error(), "set at most 1h0m0s") {
		t.Fatalf("start with a retention longer than CALLS keeps: %v", err)
	}
	_ = st.Shutdown(context.Background())
	cfg := graphstage.NewConfig()
	cfg.Retention, cfg.RetentionBucket = time.Hour, 2*time.Hour
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "retentionBucket 2h0m0s") {
		t.Fatalf("a bucket longer than the retention: %v", err)
	}
}
