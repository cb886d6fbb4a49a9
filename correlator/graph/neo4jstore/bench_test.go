package neo4jstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/streams/schema"
)

// benchEdges is how many distinct pod pairs the calls run over.
const benchEdges = 1000

// fleetFold is a fold as the graph stage makes one for a store it opened,
// with the calls of a fleet of benchEdges edges.
type fleetFold struct {
	fleet *scenario.Fleet
	fold  *graph.Fold
	next  int    // the next call's index
	seq   uint64 // the last batch's sequence
}

func newFleetFold() *fleetFold {
	f := &fleetFold{fleet: scenario.NewFleet(benchEdges), fold: graph.NewFold(graph.DefaultBrokers, nil)}
	f.fold.SkipWritten(graph.NewWritten(0))
	return f
}

// take folds the next n calls and returns them as the next batch.
func (f *fleetFold) take(n int) *graph.Batch {
	for range n {
		c := &schema.Call{}
		f.fleet.Call(f.next, c)
		f.fold.Add(c)
		f.next++
	}
	f.seq++
	return f.fold.Take(f.seq)
}

// warmStore is a migrated, wiped Neo4j holding every node and edge of the
// fleet (one batch of its first benchEdges calls), so what is measured is
// the steady state: counts added to edges that exist.
func warmStore(b *testing.B) (neo4jstore.Config, *neo4jstore.Store, *fleetFold) {
	cfg, st := neo4jtest.Migrated(b)
	f := newFleetFold()
	if err := st.Apply(context.Background(), f.take(benchEdges)); err != nil {
		b.Fatal(err)
	}
	return cfg, st, f
}

// BenchmarkNeo4jApply: calls over 1,000 edges (shaped as the correlator
// emits them, folded as the graph stage folds them) applied to a real
// Neo4j through Store.Apply, one write transaction per batch of batched
// `UNWIND $rows … MERGE` statements. batched-16k folds 16,384 calls into a
// batch (about what one 100 ms flush of a busy stage holds), 1,000,000
// calls in all; batched-1k 1,024 calls (one CALLS message), 102,400 calls.
// The baseline, per-call, is one call per transaction (the cursor read,
// the one CALLS MERGE, the cursor write), 2,000 calls. Each starts from a
// database holding the fleet's nodes and edges. The metrics split a
// batch's time into folding (Go) and Apply; server-ms/batch and
// rest-ms/batch come from a separate pass of 10 batches run with the
// driver directly: the statements' server-side times (the summaries'
// available + consumed), and the rest of the transaction's time (begin,
// commit, Bolt round trips, encoding the parameters).
func BenchmarkNeo4jApply(b *testing.B) {
	for _, tc := range []struct {
		name         string
		calls, batch int
	}{
		{"per-call", 2000, 1},
		{"batched-1k", 100 * 1024, 1024},
		{"batched-16k", 1_000_000, 16384},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg, st, f := warmStore(b)
			ctx := context.Background()
			var fold, apply time.Duration
			var rows, batches int
			for b.Loop() {
				for done := 0; done < tc.calls; done += tc.batch {
					t0 := time.Now()
					bt := f.take(min(tc.batch, tc.calls-done))
					t1 := time.Now()
					if err := st.Apply(ctx, bt); err != nil {
						b.Fatal(err)
					}
					fold += t1.Sub(t0)
					apply += time.Since(t1)
					rows += bt.Rows()
					batches++
				}
			}
			b.StopTimer()
			calls := float64(tc.calls * b.N)
			b.ReportMetric(calls/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(float64(rows)/float64(batches), "rows/batch")
			b.ReportMetric(float64(fold.Milliseconds())/float64(batches), "fold-ms/batch")
			b.ReportMetric(float64(apply.Microseconds())/1e3/float64(batches), "apply-ms/batch")
			server, total := explain(b, cfg, f, tc.batch, 10)
			b.ReportMetric(server, "server-ms/batch")
			b.ReportMetric(total-server, "rest-ms/batch")
		})
	}
}

// explain applies n more batches of size calls (and one before them, not
// counted, to open a connection), as Store.Apply does but
// with the driver directly, and returns the mean milliseconds per batch
// the server spent in the statements (their summaries' available +
// consumed times) and the whole transaction took, begin to commit.
func explain(b *testing.B, cfg neo4jstore.Config, f *fleetFold, size, n int) (server, total float64) {
	ctx := context.Background()
	d, err := neo4j.NewDriverWithContext(cfg.URI, neo4j.BasicAuth(cfg.User, cfg.Password, ""))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close(ctx)
	sess := d.NewSession(ctx, neo4j.SessionConfig{DatabaseName: cfg.Database})
	defer sess.Close(ctx)
	var srv, all time.Duration
	for i := range n + 1 { // the first, which opens the connection, not counted
		if i == 1 {
			srv, all = 0, 0
		}
		stmts := neo4jstore.Render(f.take(size))
		t0 := time.Now()
		_, err := sess.ExecuteWrite(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
			for _, s := range stmts {
				res, err := tx.Run(ctx, s.Cypher, s.Parameters)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.Name, err)
				}
				sum, err := res.Consume(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.Name, err)
				}
				srv += sum.ResultAvailableAfter() + sum.ResultConsumedAfter()
			}
			return nil, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		all += time.Since(t0)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(n) }
	return ms(srv), ms(all)
}
