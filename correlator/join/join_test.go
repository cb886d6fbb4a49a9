package join_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/schema"
)

// run feeds batches to a fresh joiner and returns every call, the joiner,
// and the holds of each batch.
func run(t *testing.T, cfg join.Config, batches []*schema.EventBatch, end uint64) ([]*schema.Call, *join.Joiner) {
	t.Helper()
	var calls []*schema.Call
	cfg.Emit = func(c *schema.Call) error {
		calls = append(calls, proto.Clone(c).(*schema.Call))
		return nil
	}
	j := join.New(cfg)
	var holds []*join.Hold
	for _, b := range batches {
		h := &join.Hold{}
		holds = append(holds, h)
		for _, ev := range b.GetEvents() {
			if err := j.Feed(b.GetOrigin().GetNode(), ev, h); err != nil {
				t.Fatalf("feed: %v", err)
			}
		}
		if err := j.Advance(0); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Advance(end); err != nil {
		t.Fatal(err)
	}
	for i, h := range holds {
		if h.Pending() != 0 {
			t.Errorf("batch %d still holds %d closes after the end", i, h.Pending())
		}
	}
	return calls, j
}

func TestScenarios(t *testing.T) {
	for _, size := range []int{1, 7, 1000} {
		t.Run(fmt.Sprintf("batch=%d", size), func(t *testing.T) {
			c := scenario.NewCluster()
			sim := scenario.New()
			c.Up(sim)
			c.Traffic(sim, 50, 3e6)
			calls, j := run(t, join.Config{}, sim.Interleaved(size), scenario.T0+uint64(time.Hour))
			if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
				t.Error(err)
			}
			st := j.Stats()
			if st.Joined != 100 || st.Unix != 50 || st.Partial != 0 {
				t.Errorf("stats %+v: want 100 joined, 50 unix, 0 partial", st)
			}
			if st.Held != 0 {
				t.Errorf("%d sides still held", st.Held)
			}
			for _, call := range calls {
				if call.GetTransport() == schema.Transport_TRANSPORT_TCP && call.GetServer().GetPod().GetUid() == "uid-nats" {
					vip := netip.AddrPortFrom(c.VIP, 4222)
					got, _ := netip.AddrFromSlice(call.GetDialedAddress())
					if got != vip.Addr() || call.GetDialedPort() != 4222 {
						t.Fatalf("call through the VIP has dialed %v:%d", got, call.GetDialedPort())
					}
					if call.GetServer().GetPod().GetName() != "nats-0" || call.GetServer().GetContainer().GetName() != "nats" {
						t.Fatalf("server not resolved to pod/container: %v", call.GetServer())
					}
				}
			}
		})
	}
}

// TestIdsDeterministic: correlating the same events twice, in batches of
// different sizes, gives the same call ids.
func TestIdsDeterministic(t *testing.T) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 20, 3e6)
	a, _ := run(t, join.Config{}, sim.Interleaved(3), scenario.T0+uint64(time.Hour))
	b, _ := run(t, join.Config{}, sim.Interleaved(500), scenario.T0+uint64(time.Hour))
	ids := map[string]bool{}
	for _, c := range a {
		if ids[c.GetId()] {
			t.Fatalf("id %s emitted twice", c.GetId())
		}
		ids[c.GetId()] = true
	}
	for _, c := range b {
		if !ids[c.GetId()] {
			t.Fatalf("id %s not in the first run", c.GetId())
		}
	}
	if len(a) != len(b) {
		t.Fatalf("%d vs %d calls", len(a), len(b))
	}
}

// TestPartial: a half with no partner becomes a call to External (or to
// the pod that held the address) once the window has passed, not before.
func TestPartial(t *testing.T) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	ext := netip.MustParseAddrPort("93.184.216.34:443")
	sim.TCP(scenario.Conn{Client: c.AppProc, ClientAddr: netip.AddrPortFrom(c.AppAddr, 40000), ServerAddr: ext,
		Start: scenario.T0 + 1e6, Dur: 1e6, Sent: 10, Received: 20, NoServer: true, ServerTruth: "ext:93.184.216.34"})
	// An uninstrumented client calling the broker: the server side alone.
	sim.TCP(scenario.Conn{Client: scenario.Proc{Node: "node-x", Exe: "curl"}, Server: c.BrokerProc,
		ClientAddr: netip.MustParseAddrPort("10.0.9.9:50000"), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
		Start: scenario.T0 + 2e6, Dur: 1e6, Sent: 1, Received: 2, NoClient: true})
	sim.Truth[scenario.Key{From: "ext:10.0.9.9", To: "uid-nats", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222}] = sim.Truth[scenario.Key{From: "proc:node-x:curl", To: "uid-nats", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222}]
	delete(sim.Truth, scenario.Key{From: "proc:node-x:curl", To: "uid-nats", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222})
	// A refused connect to the broker's address.
	sim.Failed(c.AppProc, netip.AddrPortFrom(c.AppAddr, 40002), netip.AddrPortFrom(c.BrokerAddr, 9999), scenario.T0+3e6, 111, "uid-nats")

	var calls []*schema.Call
	j := join.New(join.Config{Window: time.Second, Emit: func(c *schema.Call) error {
		calls = append(calls, proto.Clone(c).(*schema.Call))
		return nil
	}})
	for _, b := range sim.Interleaved(100) {
		for _, ev := range b.GetEvents() {
			if err := j.Feed(b.GetOrigin().GetNode(), ev, &join.Hold{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Advance(scenario.T0 + 5e8); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Fatalf("before the window ends no half is out, got %d calls", len(calls))
	}
	if err := j.Advance(scenario.T0 + 2e9); err != nil {
		t.Fatal(err)
	}
	if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
		t.Error(err)
	}
	for _, c := range calls {
		if !c.GetPartial() {
			t.Errorf("call %s not marked partial", c.GetId())
		}
	}
}

// TestIPReuse: pod A is deleted and pod B gets its address; calls to the
// address (resolved by address, the server not instrumented) land on the
// pod that held it at the time, and an instrumented B is B by its task.
func TestIPReuse(t *testing.T) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	ip := netip.MustParseAddr("10.0.2.50")
	a := &schema.Pod{Uid: "uid-a", Name: "db-a", Namespace: "shop", Node: "node-b", Ips: []string{ip.String()}}
	b := &schema.Pod{Uid: "uid-b", Name: "db-b", Namespace: "shop", Node: "node-b", Ips: []string{ip.String()}}
	sim.PodUp(scenario.T0, a)
	conn := func(i int, start uint64, server *schema.Pod, instrumented bool) {
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: scenario.Proc{Node: "node-b", Pod: server, Pid: 900, Exe: "/db"},
			ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(41000+i)), ServerAddr: netip.AddrPortFrom(ip, 5432),
			Start: start, Dur: 1e6, Sent: 5, Received: 6, NoServer: !instrumented})
	}
	for i := range 5 {
		conn(i, scenario.T0+1e9+uint64(i)*1e6, a, i%2 == 0)
	}
	sim.PodDown(scenario.T0+2e9, a)
	sim.PodUp(scenario.T0+3e9, b)
	for i := range 5 {
		conn(10+i, scenario.T0+4e9+uint64(i)*1e6, b, i%2 == 0)
	}
	calls, _ := run(t, join.Config{}, sim.Interleaved(4), scenario.T0+uint64(time.Hour))
	if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
		t.Error(err)
	}
}

func TestMalformed(t *testing.T) {
	j := join.New(join.Config{})
	bad := []*schema.Event{
		{Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CONNECT, LocalAddr: []byte{1, 2, 3}}}},
		{Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_UNSPECIFIED, LocalAddr: []byte{1, 2, 3, 4}, RemoteAddr: []byte{1, 2, 3, 4}}}},
		{Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CLOSE, LocalAddr: []byte{1, 2, 3, 4}, RemoteAddr: []byte{1, 2, 3, 4}, SockCookie: 1}}},
		{Body: &schema.Event_Unix{Unix: &schema.UnixEvent{Phase: schema.UnixPhase_UNIX_PHASE_CLOSE}}},
		{Body: &schema.Event_Pod{Pod: &schema.PodEvent{}}},
		{},
	}
	for i, ev := range bad {
		if err := j.Feed("n", ev, &join.Hold{}); !errors.Is(err, join.ErrMalformed) {
			t.Errorf("event %d: got %v, want ErrMalformed", i, err)
		}
	}
	if st := j.Stats(); st.Malformed != uint64(len(bad)) || st.Held != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestBound: the state never holds more than MaxConnections sides; what is
// evicted is counted, and closed sides are emitted, not lost.
func TestBound(t *testing.T) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 200, 3e6)
	var n int
	j := join.New(join.Config{MaxConnections: 8, Emit: func(*schema.Call) error { n++; return nil }})
	for _, b := range sim.Interleaved(1000) {
		for _, ev := range b.GetEvents() {
			if err := j.Feed(b.GetOrigin().GetNode(), ev, &join.Hold{}); err != nil {
				t.Fatal(err)
			}
			if st := j.Stats(); st.Held > 8 {
				t.Fatalf("%d sides held, bound 8", st.Held)
			}
		}
	}
	if err := j.Advance(scenario.T0 + uint64(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.EvictedOpen+st.EvictedEmit == 0 {
		t.Fatalf("nothing evicted: %+v", st)
	}
	t.Logf("stats %+v, %d calls", st, n)
}
