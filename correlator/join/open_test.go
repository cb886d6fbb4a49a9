package join_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/schema"
)

// longScenario is the app holding a connection to the broker open for
// 30 s through the Service VIP, sending and receiving a little every
// second, with the ground truth of what went each way by any time.
func longScenario(skew uint64, noServer bool) (*scenario.Sim, scenario.Key, func(at uint64) (uint64, uint64)) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	traffic := func(i int) (uint64, uint64) {
		if i%5 == 3 {
			return 0, 0 // an idle second: no progress event
		}
		return uint64(100 + i), uint64(1000 + 7*i)
	}
	const every = uint64(time.Second)
	start := scenario.T0 + uint64(time.Second)
	var sent, recv uint64
	for i := range 29 {
		a, b := traffic(i)
		sent, recv = sent+a, recv+b
	}
	l := scenario.Long{Conn: scenario.Conn{Client: c.AppProc, Server: c.BrokerProc,
		ClientAddr: netip.AddrPortFrom(c.AppAddr, 45000), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
		Dialed: netip.AddrPortFrom(c.VIP, 4222), Start: start, Dur: 30 * every, Sent: sent + 5, Received: recv + 9,
		NoServer: noServer}, OpenAfter: uint64(250 * time.Millisecond), Every: every, Traffic: traffic}
	key := scenario.Key{From: "uid-app", To: "uid-nats", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222}
	if noServer {
		// The broker's node is not instrumented: the client alone,
		// resolved by the VIP to nothing weft knows.
		l.ServerTruth = "ext:" + c.VIP.String()
		key.To = l.ServerTruth
	}
	sim.LongTCP(l, skew)
	// What the client had sent and received by time at (its progress
	// events' totals).
	sentBy := func(at uint64) (uint64, uint64) {
		var s, r uint64
		for i, t := 0, start+every; t < start+30*every && t <= at; i, t = i+1, t+every {
			a, b := traffic(i)
			s, r = s+a, r+b
		}
		return s, r
	}
	return sim, key, sentBy
}

// TestLongConnection: a connection held open 30 s is a call from the
// message that brings its second side on (its edge counted once), its
// bytes follow what the client's progress events report, and its close
// makes the totals exact — whatever the batching, the other node's lag,
// or a missing server side.
func TestLongConnection(t *testing.T) {
	for _, tc := range []struct {
		name     string
		batch    int
		skew     uint64
		noServer bool
	}{
		{"batch=1", 1, 0, false},
		{"batch=1000", 1000, 0, false},
		{"server's node 300ms behind", 1, uint64(300 * time.Millisecond), false},
		{"server not instrumented", 1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, key, sentBy := longScenario(tc.skew, tc.noServer)
			var calls []*schema.Call
			j := join.New(join.Config{Emit: func(c *schema.Call) error {
				calls = append(calls, proto.Clone(c).(*schema.Call))
				return nil
			}})
			opened := false
			var client uint64 // the client's latest event fed
			for _, b := range sim.Interleaved(tc.batch) {
				h := &join.Hold{}
				var last uint64
				for _, ev := range b.GetEvents() {
					if err := j.Feed(b.GetOrigin().GetNode(), ev, h); err != nil {
						t.Fatal(err)
					}
					last = ev.GetTimeUnixNano()
					if ev.GetTcp().GetRole() == schema.Role_ROLE_CLIENT {
						client = last
					}
				}
				// Wall time follows the events (the flush loop's Advance).
				if err := j.Advance(last); err != nil {
					t.Fatal(err)
				}
				got := scenario.Fold(calls)[key]
				if got == nil {
					continue
				}
				if got.Count != 1 {
					t.Fatalf("after the batch at %v: count %d, want 1", time.Duration(last-scenario.T0), got.Count)
				}
				if !opened {
					opened = true
					if tc.batch > 1 {
						continue // a batch holds seconds of events
					}
					// Out while open: at its second side's open, or at
					// the window's end alone.
					limit := scenario.T0 + uint64(time.Second+250*time.Millisecond) + tc.skew + 40_000
					if tc.noServer {
						// Alone: the window, and the watermark moves on
						// with the client's next event (a second later).
						limit += 2 * uint64(time.Second)
					}
					if last > limit {
						t.Fatalf("edge first there at %v, want by %v", time.Duration(last-scenario.T0), time.Duration(limit-scenario.T0))
					}
				}
				if ws, wr := sentBy(client); client < scenario.T0+31*uint64(time.Second) && (got.Sent != ws || got.Received != wr) {
					// The client's progress drives the bytes; a server
					// lagging the client changes nothing.
					t.Fatalf("at %v: bytes %d/%d, the client had %d/%d", time.Duration(last-scenario.T0), got.Sent, got.Received, ws, wr)
				}
			}
			if err := j.Advance(scenario.T0 + uint64(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
				t.Error(err)
			}
			st := j.Stats()
			if tc.batch == 1000 {
				// Its whole life in one message each side: closed by the
				// time both sides are in, one whole call.
				if st.Joined != 1 || st.Opened != 0 || len(calls) != 1 {
					t.Errorf("stats %+v, %d calls: want one whole call", st, len(calls))
				}
				return
			}
			if st.Opened != 1 || st.ClosedOpen != 1 || st.Held != 0 {
				t.Errorf("stats %+v: want 1 opened, 1 closed open, none held", st)
			}
			states := map[schema.CallState]int{}
			for _, c := range calls {
				states[c.GetState()]++
				if schema.ConnectionID(c) != schema.ConnectionID(calls[0]) {
					t.Errorf("emission %s is not of connection %s", c.GetId(), schema.ConnectionID(calls[0]))
				}
			}
			if states[schema.CallState_CALL_STATE_OPEN] != 1 || states[schema.CallState_CALL_STATE_CLOSE] != 1 || states[schema.CallState_CALL_STATE_PROGRESS] < 20 {
				t.Errorf("emissions by state %v: want one OPEN, one CLOSE, a PROGRESS per busy second", states)
			}
		})
	}
}

// TestLongConnectionRestart: the correlator stops after any message of a
// long connection's life; a new one is fed what the first had not acked
// (its messages with events still parked) and the rest. With the graph's
// dedup of re-emissions, the connection counts once and its totals are
// exact.
func TestLongConnectionRestart(t *testing.T) {
	sim, _, _ := longScenario(uint64(200*time.Millisecond), false)
	batches := sim.Interleaved(3)
	for cut := 1; cut < len(batches); cut += 3 {
		t.Run(fmt.Sprint("stop after ", cut), func(t *testing.T) {
			var calls []*schema.Call
			emit := func(c *schema.Call) error {
				calls = append(calls, proto.Clone(c).(*schema.Call))
				return nil
			}
			feed := func(j *join.Joiner, b *schema.EventBatch) *join.Hold {
				h := &join.Hold{}
				for _, ev := range b.GetEvents() {
					if err := j.Feed(b.GetOrigin().GetNode(), ev, h); err != nil {
						t.Fatal(err)
					}
				}
				if err := j.Advance(b.GetEvents()[len(b.GetEvents())-1].GetTimeUnixNano()); err != nil {
					t.Fatal(err)
				}
				return h
			}
			first := join.New(join.Config{Emit: emit})
			var holds []*join.Hold
			for _, b := range batches[:cut] {
				holds = append(holds, feed(first, b))
			}
			// Redelivered: what was not acked, before the new messages.
			var again []*schema.EventBatch
			for i, h := range holds {
				if h.Pending() > 0 {
					again = append(again, batches[i])
				}
			}
			second := join.New(join.Config{Emit: emit})
			for _, b := range append(again, batches[cut:]...) {
				feed(second, b)
			}
			if err := second.Advance(scenario.T0 + uint64(time.Hour)); err != nil {
				t.Fatal(err)
			}
			seen := graph.NewSeen(0)
			var kept []*schema.Call
			for _, c := range calls {
				if seen.AddCall(c) {
					kept = append(kept, c)
				}
			}
			if err := scenario.Compare(sim.Truth, scenario.Fold(kept)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestEvictedOpen: long connections past the bound are counted as
// evicted, never silent, and resume from their next events: each still
// counts once with exact totals.
func TestEvictedOpen(t *testing.T) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	for i := range 6 {
		sim.LongTCP(scenario.Long{Conn: scenario.Conn{Client: c.AppProc, Server: c.BrokerProc,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(46000+i)), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Start: scenario.T0 + uint64(i)*uint64(10*time.Millisecond), Dur: uint64(10 * time.Second), Sent: 500, Received: 700},
			OpenAfter: uint64(250 * time.Millisecond), Every: uint64(time.Second),
			Traffic: func(int) (uint64, uint64) { return 10, 20 }}, 0)
	}
	calls, j := run(t, join.Config{MaxConnections: 4}, sim.Interleaved(1), scenario.T0+uint64(time.Hour))
	if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
		t.Error(err)
	}
	if st := j.Stats(); st.EvictedOpen == 0 || st.Resumed == 0 {
		t.Errorf("stats %+v: want open sides evicted and resumed", st)
	}
}
