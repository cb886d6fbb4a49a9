package correlate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/correlate"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

func settings(cfg *correlate.Config) stage.Settings {
	return stage.Settings{
		Name: "correlator", Kind: "correlator", Node: "ctl",
		Inputs:  []stage.Stream{{Name: schema.StreamEvents}},
		Outputs: []stage.Stream{{Name: schema.StreamCalls}},
		Config:  cfg, Counters: &stage.Counters{},
	}
}

func testConfig() *correlate.Config {
	c := correlate.NewConfig()
	c.Window, c.CloseWait, c.AckWait, c.FlushInterval = 200*time.Millisecond, 300*time.Millisecond, time.Second, 20*time.Millisecond
	return c
}

func start(t *testing.T, h *stagetest.Host, cfg *correlate.Config) stage.Stage {
	t.Helper()
	st, err := correlate.New(settings(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestGroundTruth: the three scenarios, through NATS, give the exact calls.
func TestGroundTruth(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 100, 3e6)
	stagetest.PublishEvents(t, s.JS, sim.Interleaved(16))
	st := start(t, stagetest.NewHost(s.JS), testConfig())
	defer st.Shutdown(context.Background())
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		calls := stagetest.ReadCalls(t, s.JS)
		if _, dups := stagetest.Dedupe(calls); dups > 0 {
			return fmt.Errorf("%d duplicate calls", dups)
		}
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	// Every EVENTS message is acked once its calls are out.
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		ci, err := s.JS.Consumer(context.Background(), schema.StreamEvents, "correlator-EVENTS")
		if err != nil {
			return err
		}
		info, err := ci.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("ack pending %d, pending %d", info.NumAckPending, info.NumPending)
		}
		return nil
	})
}

// TestKillRestart: the correlator is killed mid-stream (its connection cut,
// nothing drained) and a new one takes over the durable; once the graph
// stage's id dedupe is applied, counts equal the ground truth.
func TestKillRestart(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 300, 3e6)
	batches := sim.Interleaved(8)
	half := len(batches) / 2
	stagetest.PublishEvents(t, s.JS, batches[:half])

	nc1, js1 := stagetest.Connect(t, s)
	st1 := start(t, stagetest.NewHost(js1), testConfig())
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(stagetest.ReadCalls(t, s.JS)); n < 50 {
			return fmt.Errorf("%d calls so far", n)
		}
		return nil
	})
	nc1.Close() // killed: nothing flushed, nothing acked from here on
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = st1.Shutdown(dead)

	stagetest.PublishEvents(t, s.JS, batches[half:])
	_, js2 := stagetest.Connect(t, s)
	st2 := start(t, stagetest.NewHost(js2), testConfig())
	defer st2.Shutdown(context.Background())
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	_, dups := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
	t.Logf("calls emitted again after the kill (dropped by id downstream): %d", dups)
}

// TestMalformedToDLQ: a batch that does not decode and a batch with a bad
// event go to the DLQ with a reason; the good events still count.
func TestMalformedToDLQ(t *testing.T) {
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	ctx := context.Background()
	msgCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.JS.Publish(msgCtx, "weft.events.node-a.tcp", []byte("\xff\xff not protobuf")); err != nil {
		t.Fatal(err)
	}
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 3, 3e6)
	batches := sim.Interleaved(1000)
	batches[0].Events = append(batches[0].Events, &schema.Event{TimeUnixNano: scenario.T0, Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CONNECT, LocalAddr: []byte{1}}}})
	stagetest.PublishEvents(t, s.JS, batches)
	st := start(t, stagetest.NewHost(s.JS), testConfig())
	defer st.Shutdown(ctx)
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, scenario.Fold(stagetest.ReadCalls(t, s.JS)))
	})
	dlq, err := s.JS.Stream(ctx, schema.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		info, err := dlq.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 2 {
			return fmt.Errorf("%d DLQ messages, want 2", info.State.Msgs)
		}
		return nil
	})
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r := m.Header.Get(schema.HeaderDLQReason); r == "" {
			t.Errorf("DLQ message %d has no reason", seq)
		} else {
			t.Logf("DLQ %d: %s", seq, r)
		}
	}
}
