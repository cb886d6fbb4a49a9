package graphstage_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestLongConnections: the cluster's short calls and three connections
// from the app to the broker held open 30 s (port 4223), published up to
// 10.5 s into their life, then the correlator and the graph stage are
// killed and started again, and the rest is published. While open the
// edge counts the three connections once each with the bytes the client
// had reported; at the end every edge is the ground truth — in the
// embedded store and in Neo4j.
func TestLongConnections(t *testing.T) {
	for _, store := range []string{"embedded", "neo4j"} {
		t.Run(store, func(t *testing.T) {
			s := natstest.Start(t)
			stagetest.Streams(t, s)
			c := scenario.NewCluster()
			sim := scenario.New()
			c.Up(sim)
			c.Traffic(sim, 50, 3e6)
			for i := range 3 {
				sim.LongTCP(scenario.Long{Conn: scenario.Conn{Client: c.AppProc, Server: c.BrokerProc,
					ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(47000+i)), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4223),
					Start: scenario.T0 + uint64(time.Second) + uint64(i)*1e6, Dur: uint64(30 * time.Second), Sent: 3100, Received: 31000},
					OpenAfter: uint64(250 * time.Millisecond), Every: uint64(time.Second),
					Traffic: func(int) (uint64, uint64) { return 100, 1000 }}, uint64(100*time.Millisecond))
			}
			key := scenario.Key{From: "uid-app", To: "uid-nats", Transport: schema.Transport_TRANSPORT_TCP, Port: 4223}
			cut := scenario.T0 + uint64(10500*time.Millisecond)
			var first, rest []*schema.EventBatch
			var want scenario.Totals // the open edge, as the client reported it by the cut
			reported := map[uint64][2]uint64{}
			for _, b := range sim.Interleaved(2) {
				if b.GetEvents()[0].GetTimeUnixNano() > cut {
					rest = append(rest, b)
					continue
				}
				first = append(first, b)
				for _, ev := range b.GetEvents() {
					if e := ev.GetTcp(); e.GetRole() == schema.Role_ROLE_CLIENT && e.GetRemotePort() == 4223 {
						reported[e.GetSockCookie()] = [2]uint64{e.GetBytesSent(), e.GetBytesReceived()}
					}
				}
			}
			for _, r := range reported {
				want.Count++
				want.Sent += r[0]
				want.Received += r[1]
			}
			if want.Count != 3 || want.Sent == 0 {
				t.Fatalf("the first part reports %+v: want three connections with bytes", want)
			}

			var set func() stage.Settings
			var edges func() map[scenario.Key]*scenario.Totals
			if store == "neo4j" {
				cfg, st := neo4jtest.Migrated(t)
				set = func() stage.Settings { return neo4jSettings(t, cfg, nil) }
				edges = func() map[scenario.Key]*scenario.Totals { return podEdges(served(t, st)) }
			} else {
				dir := t.TempDir()
				set = func() stage.Settings { return graphSettings(dir, nil) }
			}

			stagetest.PublishEvents(t, s.JS, first)
			nc1, js1 := stagetest.Connect(t, s)
			h1 := stagetest.NewHost(js1)
			cor1 := startCorrelator(t, h1)
			g1 := startGraph(t, h1, set())
			if edges == nil {
				edges = func() map[scenario.Key]*scenario.Totals { return podEdges(fetch(t, h1)) }
			}
			natstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
				got := edges()[key]
				if got == nil || *got != want {
					return fmt.Errorf("open edge %+v, want %+v", got, want)
				}
				return nil
			})
			// Kill both: the connection is cut, nothing is drained.
			nc1.Close()
			dead, cancel := context.WithCancel(context.Background())
			cancel()
			_ = cor1.Shutdown(dead)
			_ = g1.Shutdown(dead)

			stagetest.PublishEvents(t, s.JS, rest)
			_, js2 := stagetest.Connect(t, s)
			h2 := stagetest.NewHost(js2)
			cor2 := startCorrelator(t, h2)
			defer cor2.Shutdown(context.Background())
			g2 := startGraph(t, h2, set())
			defer g2.Shutdown(context.Background())
			if store == "embedded" {
				edges = func() map[scenario.Key]*scenario.Totals { return podEdges(fetch(t, h2)) }
			}
			natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
				return scenario.Compare(sim.Truth, edges())
			})
		})
	}
}
