package graphstage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest/testcypher"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
	testneo4j "github.com/weftobs/weft/testenv/neo4j"
)

// TestNeo4jRefusesStage: for each way Neo4j refuses the graph stage
// (nothing listening, wrong password, wrong database, migrations pending)
// the stage starts, says why it is not ready in one line naming the URI,
// and consumes nothing, so CALLS keeps every call (nothing acked). Then
// what can be fixed from Neo4j's side is fixed, without touching weft —
// Neo4j starts after the stage; the user's password is set to the one the
// stage has; the migrations job runs — and every call reaches the graph.
// A wrong database stays refused (Community has one database, so none can
// be made), and the stage shuts down clean.
func TestNeo4jRefusesStage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bad   func(t *testing.T) (cfg neo4jstore.Config, fix func())
		want  string
		fixed bool
	}{
		{name: "nothing listening", fixed: true, want: "cannot connect: dial tcp 127.0.0.1:",
			bad: func(t *testing.T) (neo4jstore.Config, func()) {
				cfg, srv := neo4jtest.Own(t)
				neo4jtest.Migrate(t, neo4jtest.Open(t, cfg))
				ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
				defer cancel()
				if err := srv.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				return cfg, func() {
					ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
					defer cancel()
					if _, err := srv.Restart(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}},
		{name: "wrong password", fixed: true, want: "authentication failed for user neo4j", bad: func(t *testing.T) (neo4jstore.Config, func()) {
			good, _ := neo4jtest.Own(t)
			neo4jtest.Migrate(t, neo4jtest.Open(t, good))
			wrong := good
			wrong.Password += "-wrong"
			return wrong, func() {
				sys := good
				sys.Database = "system"
				// Neo4j refuses the user for a while after the stage's
				// failed logins.
				natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
					_, err := neo4jtest.Run(sys, []string{testcypher.SetPassword}, map[string]any{"old": good.Password, "new": wrong.Password})
					return err
				})
			}
		}},
		{name: "migrations pending", fixed: true, want: `pending migrations (V001 constraints, V002 indexes, `,
			bad: func(t *testing.T) (neo4jstore.Config, func()) {
				cfg := neo4jtest.Fresh(t)
				return cfg, func() { neo4jtest.Migrate(t, neo4jtest.Open(t, cfg)) }
			}},
		{name: "wrong database", want: `database "nope" does not exist`, bad: func(t *testing.T) (neo4jstore.Config, func()) {
			cfg := neo4jtest.Config(t)
			cfg.Database = "nope"
			return cfg, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, fix := tc.bad(t)
			s, sim, batches := clusterEvents(t, 100)
			h := stagetest.NewHost(s.JS)
			cor := startCorrelator(t, h)
			defer cor.Shutdown(context.Background())
			g := startGraph(t, h, neo4jSettings(t, cfg, nil))
			defer g.Shutdown(context.Background())
			stagetest.PublishEvents(t, s.JS, batches)

			ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
			defer cancel()
			prefix := "neo4j " + cfg.URI + ": "
			natstest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
				err := g.Ready()
				if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
					return fmt.Errorf("stage's Ready: %v; want one line starting %q saying %q", err, prefix, tc.want)
				}
				return nil
			})
			t.Logf("not ready: %v", g.Ready())
			// Calls on CALLS, and none of them taken by the stage: it has
			// no consumer, so nothing is acked.
			natstest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
				str, err := s.JS.Stream(ctx, schema.StreamCalls)
				if err != nil {
					return err
				}
				info, err := str.Info(ctx)
				if err != nil {
					return err
				}
				if info.State.Msgs == 0 {
					return fmt.Errorf("CALLS holds %d messages", info.State.Msgs)
				}
				return nil
			})
			if _, err := s.JS.Consumer(ctx, schema.StreamCalls, consume.DurableName("graph", schema.StreamCalls)+"-neo4j"); err == nil {
				t.Fatal("the stage made its consumer while Neo4j refused it")
			}
			if gs := g.Stats(); gs.Calls != 0 || gs.Applied != 0 {
				t.Fatalf("stage while Neo4j refused it: %+v, want nothing folded or applied", gs)
			}
			if !tc.fixed {
				return
			}
			fix()
			st := neo4jtest.Open(t, cfg)
			natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
				return scenario.Compare(sim.Truth, podEdges(served(t, st)))
			})
			natstest.CheckFor(t, time.Minute, 50*time.Millisecond, g.Ready)
		})
	}
}

// TestNeo4jReadOnly: the graph stage writing to a database that takes
// reads but refuses writes (what a read-only member of a cluster does;
// Community shows it with server.databases.read_only) holds every message
// it took, says on Ready in one line the URI, the statement and that the
// database is read-only, and loses nothing: once Neo4j takes writes again
// the graph equals the ground truth.
func TestNeo4jReadOnly(t *testing.T) {
	cfg, srv := neo4jtest.Own(t)
	neo4jtest.Migrate(t, neo4jtest.Open(t, cfg))
	ctx, cancel := context.WithTimeout(context.Background(), neo4jtest.StartTimeout)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	ro, err := srv.Restart(ctx, func(o *testneo4j.Options) { o.Conf = []string{"server.databases.read_only=neo4j"} })
	if err != nil {
		t.Fatal(err)
	}

	s, sim, batches := clusterEvents(t, 100)
	h := stagetest.NewHost(s.JS)
	cor := startCorrelator(t, h)
	defer cor.Shutdown(context.Background())
	g := startGraph(t, h, neo4jSettings(t, cfg, nil))
	defer g.Shutdown(context.Background())
	stagetest.PublishEvents(t, s.JS, batches)

	prefix := "neo4j " + cfg.URI + ": "
	natstest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		err := g.Ready()
		if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "statement ") ||
			!strings.Contains(err.Error(), `database "neo4j" is read-only on this server`) || strings.Contains(err.Error(), "\n") {
			return fmt.Errorf("stage's Ready: %v; want one line starting %q naming the statement and saying read-only", err, prefix)
		}
		return nil
	})
	t.Logf("not ready: %v", g.Ready())
	if gs := g.Stats(); gs.Applied != 0 {
		t.Fatalf("stage while the database is read-only: %+v, want nothing applied", gs)
	}
	info, err := s.JS.Consumer(ctx, schema.StreamCalls, consume.DurableName("graph", schema.StreamCalls)+"-neo4j")
	if err != nil {
		t.Fatal(err)
	}
	if ci, err := info.Info(ctx); err != nil || ci.AckFloor.Stream != 0 {
		t.Fatalf("CALLS consumer while nothing could be written: %+v %v, want nothing acked", ci, err)
	}

	if err := ro.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Restart(ctx, func(o *testneo4j.Options) { o.Conf = nil }); err != nil {
		t.Fatal(err)
	}
	st := neo4jtest.Open(t, cfg)
	natstest.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		return scenario.Compare(sim.Truth, podEdges(served(t, st)))
	})
	natstest.CheckFor(t, time.Minute, 50*time.Millisecond, g.Ready)
}
