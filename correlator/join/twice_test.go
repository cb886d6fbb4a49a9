package join_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/schema"
)

// copyBatches is what a second collector on the same nodes publishes: the
// same events, each TCP side under the start its own programs read (a
// little later), and shifted by d (0 for the same time).
func copyBatches(bs []*schema.EventBatch, startSkew, d uint64) []*schema.EventBatch {
	var out []*schema.EventBatch
	for _, b := range bs {
		c := proto.Clone(b).(*schema.EventBatch)
		for _, ev := range c.GetEvents() {
			ev.TimeUnixNano += d
			if tc := ev.GetTcp(); tc != nil {
				tc.StartUnixNano += startSkew + d
			}
		}
		out = append(out, c)
	}
	return out
}

// tcpTraffic is short calls (one refused) and a long connection, TCP only.
func tcpTraffic() (*scenario.Cluster, *scenario.Sim) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	for i := range 30 {
		t := scenario.T0 + 1e6 + uint64(i)*3e6
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: c.BrokerProc,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(20000+i)), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Dialed: netip.AddrPortFrom(c.VIP, 4222), Start: t, Dur: 2e6, Sent: 100 + uint64(i%7), Received: 2000})
	}
	sim.Failed(c.AppProc, netip.AddrPortFrom(c.AppAddr, 30000), netip.AddrPortFrom(c.BrokerAddr, 9999), scenario.T0+5e6, 111, "uid-nats")
	sim.LongTCP(scenario.Long{
		Conn: scenario.Conn{Client: c.AppProc, Server: c.BrokerProc,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, 31000), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Start: scenario.T0 + 2e6, Dur: 6e9, Sent: 60, Received: 600},
		OpenAfter: 250e6, Every: 1e9,
		Traffic: func(int) (uint64, uint64) { return 10, 100 },
	}, 0)
	return c, sim
}

// TestTwoCollectorsOneNode: two collectors on a node (a DaemonSet rolled
// out with maxSurge: the new one runs before the old one stops) report
// every socket twice, each copy under its own start time, from two
// publishers whose messages reach the joiner in any order. Every
// connection still counts once, with its bytes once; a connection with
// the same socket cookie much later (the node rebooted: cookies start
// over) is a new one.
func TestTwoCollectorsOneNode(t *testing.T) {
	_, sim := tcpTraffic()
	a := sim.Interleaved(5)
	b := copyBatches(a, 1500, 0)
	// The new collector found every socket open at its start-up scan,
	// 2 s after the old one saw them start.
	scanned := copyBatches(a, 2e9, 0)
	orders := map[string][]*schema.EventBatch{
		"the old collector's first":   append(append([]*schema.EventBatch{}, a...), b...),
		"the new collector's first":   append(append([]*schema.EventBatch{}, b...), a...),
		"interleaved":                 interleave(a, b),
		"interleaved, new first":      interleave(b, a),
		"scanned late, old first":     append(append([]*schema.EventBatch{}, a...), scanned...),
		"scanned late, scanned first": append(append([]*schema.EventBatch{}, scanned...), a...),
	}
	for name, bs := range orders {
		t.Run(name, func(t *testing.T) {
			calls, j := run(t, join.Config{}, bs, scenario.T0+uint64(time.Hour))
			if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
				t.Error(err)
			}
			if st := j.Stats(); st.Duplicates == 0 || st.Held != 0 {
				t.Errorf("stats %+v: want duplicates swallowed, nothing held", st)
			}
		})
	}
	t.Run("cookies again after a reboot", func(t *testing.T) {
		later := copyBatches(a, 0, uint64(time.Minute))
		calls, _ := run(t, join.Config{}, append(append([]*schema.EventBatch{}, a...), later...), scenario.T0+uint64(time.Hour))
		want := map[scenario.Key]*scenario.Totals{}
		for k, v := range sim.Truth {
			want[k] = &scenario.Totals{Count: 2 * v.Count, Sent: 2 * v.Sent, Received: 2 * v.Received, Errors: 2 * v.Errors}
		}
		if err := scenario.Compare(want, scenario.Fold(calls)); err != nil {
			t.Error(err)
		}
	})
}

func interleave(x, y []*schema.EventBatch) []*schema.EventBatch {
	if len(x) != len(y) {
		panic(fmt.Sprintf("interleave %d and %d batches", len(x), len(y)))
	}
	var out []*schema.EventBatch
	for i := range x {
		out = append(out, x[i], y[i])
	}
	return out
}
