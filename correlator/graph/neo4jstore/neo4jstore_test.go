package neo4jstore_test

// The Neo4j integration tests of the store: they run against a real
// Neo4j, the package's own or the one WEFT_NEO4J_URI names. Each wipes its
// database first; see package neo4jtest for what they do to it and when they
// refuse to.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/migrations"
	"github.com/weftobs/weft/streams/schema"
	testneo4j "github.com/weftobs/weft/testenv/neo4j"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), neo4jtest.Timeout)
	t.Cleanup(cancel)
	return c
}

// traffic is round r of calls of every shape the graph has: a pod calling
// a NATS pod over TCP (Node, Workload, Container, Broker), an app
// container calling its crypto-broker sidecar over a unix socket
// (container-level CALLS), a host process calling an address outside
// everything (Process, External, errors), and that address calling a pod.
// Times are nanoseconds past 2^53, so a store that rounds them through a
// float shows.
func traffic(r int) []*schema.Call {
	at := scenario.T0 + uint64(r)*1e9 + 123
	app := &schema.Endpoint{Node: "node-a", Address: []byte{10, 0, 1, 5},
		Pod: &schema.Pod{Uid: "uid-app", Name: "app-7d9f", Namespace: "shop", Node: "node-a", Ips: []string{"10.0.1.5"},
			Owners:   []*schema.OwnerRef{{Kind: "ReplicaSet", Name: "app-7d9f", Uid: "own-app-7d9f", Controller: true}},
			Workload: &schema.OwnerRef{Kind: "Deployment", Name: "app", Uid: "own-app", Controller: true}},
		Container: &schema.Container{Id: "c-app", Name: "app", Image: "example/app:1"}}
	nats := &schema.Endpoint{Node: "node-b", Address: []byte{10, 0, 2, 7},
		Pod: &schema.Pod{Uid: "uid-nats", Name: "nats-0", Namespace: "infra", Node: "node-b", Ips: []string{"10.0.2.7"},
			Labels: map[string]string{"app.kubernetes.io/name": "nats"},
			Owners: []*schema.OwnerRef{{Kind: "StatefulSet", Name: "nats", Uid: "own-nats", Controller: true}}},
		Container: &schema.Container{Id: "c-nats", Name: "nats", Image: "nats:2.10"}}
	orders := &schema.Pod{Uid: "uid-orders", Name: "orders-5c8b", Namespace: "shop", Node: "node-a", Ips: []string{"10.0.1.9"}}
	ordersApp := &schema.Endpoint{Node: "node-a", Pod: orders, Container: &schema.Container{Id: "c-orders", Name: "orders", Image: "example/orders:1"}}
	signer := &schema.Endpoint{Node: "node-a", Pod: orders, Container: &schema.Container{Id: "c-signer", Name: "signer", Image: "example/crypto-broker:1"}}
	curl := &schema.Endpoint{Node: "node-a", Address: []byte{192, 168, 1, 10}, Task: &schema.Task{Pid: 4242, Exe: "/usr/bin/curl", Comm: "curl"}}
	outside := &schema.Endpoint{External: true, Address: []byte{93, 184, 216, 34}}
	tcp, unix := schema.Transport_TRANSPORT_TCP, schema.Transport_TRANSPORT_UNIX
	var out []*schema.Call
	add := func(cli, srv *schema.Endpoint, tr schema.Transport, port uint32, path string, sent, recv uint64, errno int32) {
		start := at + uint64(len(out))*1e6
		out = append(out, &schema.Call{Id: fmt.Sprintf("call-%d-%d", r, len(out)), Transport: tr, Client: cli, Server: srv,
			Port: port, Path: path, BytesSent: sent, BytesReceived: recv, StartUnixNano: start, EndUnixNano: start + 2e6 + uint64(r), Errno: errno})
	}
	add(app, nats, tcp, 4222, "", 100+uint64(r), 2000, 0)
	add(ordersApp, signer, unix, 0, "/var/run/crypto-broker.sock", 64, 512+uint64(r), 0)
	add(curl, outside, tcp, 443, "", 0, 0, int32(r%2)*111)
	add(outside, app, tcp, 8080, "", 10, 20, 0)
	return out
}

// batch folds the given rounds of traffic into one batch at seq, as the
// graph stage does.
func batch(seq uint64, rounds ...int) *graph.Batch {
	f := graph.NewFold(graph.DefaultBrokers, nil)
	for _, r := range rounds {
		for _, c := range traffic(r) {
			f.Add(c)
		}
		if r == 4 {
			// The orders pod is deleted after its last round: it and
			// both its containers end, its calls stay.
			f.AddEnded(&schema.PodEnded{Pod: &schema.Pod{Uid: "uid-orders", Name: "orders-5c8b", Namespace: "shop", Node: "node-a", Ips: []string{"10.0.1.9"},
				Containers: []*schema.Container{{Id: "c-orders", Name: "orders", Image: "example/orders:1"}, {Id: "c-signer", Name: "signer", Image: "example/crypto-broker:1"}}},
				EndedUnixNano: ordersEnded})
		}
	}
	return f.Take(seq)
}

// ordersEnded is when batch ends the orders pod: past 2^53, as traffic's
// times.
const ordersEnded = scenario.T0 + 5e9 + 77

func apply(t *testing.T, st graph.Store, b *graph.Batch) {
	t.Helper()
	if err := st.Apply(ctx(t), b); err != nil {
		t.Fatalf("apply batch %d: %v", b.Seq, err)
	}
}

func lastSeq(t *testing.T, st graph.Store) uint64 {
	t.Helper()
	n, err := st.LastSeq(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNeo4jBatchWrittenTwice: the embedded store is given each batch once
// and is the ground truth; Neo4j is given them again (a retry, a restarted
// store's redelivery, an older batch, four writers of one batch at once)
// and must hold the same graph, counts and bytes included, after each.
func TestNeo4jBatchWrittenTwice(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	mem := memstore.New()
	same := func(step string) {
		t.Helper()
		if err := neo4jtest.Compare(neo4jtest.Graph(t, mem), neo4jtest.Graph(t, st)); err != nil {
			t.Fatalf("%s: the Neo4j graph is not the embedded store's given each batch once: %v", step, err)
		}
	}
	b1, b2, b3 := batch(3, 0, 1), batch(5, 2), batch(9, 3, 4)

	apply(t, mem, b1)
	apply(t, st, b1)
	same("first write")
	if n := lastSeq(t, st); n != 3 {
		t.Fatalf("recorded sequence %d after batch 3", n)
	}
	if empty, err := st.Empty(ctx(t)); err != nil || empty {
		t.Fatalf("Empty after a write: %v, %v", empty, err)
	}
	apply(t, st, b1)
	same("the same batch again")

	// A restarted stage has a new store and is redelivered what it wrote
	// but had not acked.
	st2 := neo4jtest.Open(t, cfg)
	if n := lastSeq(t, st2); n != 3 {
		t.Fatalf("a new store reads sequence %d, want 3", n)
	}
	apply(t, st2, b1)
	same("the same batch after a restart")
	apply(t, st2, batch(2, 0))
	same("an older batch")
	apply(t, mem, b2)
	apply(t, st2, b2)
	same("the next batch")

	apply(t, mem, b3)
	var stores []*neo4jstore.Store
	for range 4 {
		stores = append(stores, neo4jtest.Open(t, cfg))
	}
	errs := make([]error, len(stores))
	c := ctx(t)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Apply(c, b3) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	same("one batch written by four writers at once")
	if n := lastSeq(t, st); n != 9 {
		t.Fatalf("recorded sequence %d after batch 9", n)
	}
}

// TestNeo4jCypherExportLoads: `weft graph export --format cypher`, run
// statement by statement as cypher-shell runs a file, loads into an empty
// Neo4j (never migrated, and migrated) a graph whose JSON export is the
// source's.
func TestNeo4jCypherExportLoads(t *testing.T) {
	mem := memstore.New()
	for _, b := range []*graph.Batch{batch(3, 0, 1), batch(5, 2), batch(9, 3, 4)} {
		apply(t, mem, b)
	}
	src := neo4jtest.Graph(t, mem)
	var script bytes.Buffer
	if err := export.Write(&script, src, "cypher"); err != nil {
		t.Fatal(err)
	}
	statements := migrations.Split(script.String())
	if len(statements) != len(src.Nodes)+len(src.Edges) {
		t.Fatalf("%d statements for %d nodes and %d edges", len(statements), len(src.Nodes), len(src.Edges))
	}
	for _, migrated := range []bool{false, true} {
		name := "empty"
		if migrated {
			name = "migrated"
		}
		t.Run(name, func(t *testing.T) {
			cfg := neo4jtest.Fresh(t)
			st := neo4jtest.Open(t, cfg)
			if migrated {
				neo4jtest.Migrate(t, st)
			}
			if _, err := neo4jtest.Run(cfg, statements, nil); err != nil {
				t.Fatalf("load the Cypher export: %v", err)
			}
			if err := neo4jtest.Compare(src, neo4jtest.Graph(t, st)); err != nil {
				t.Fatalf("the loaded graph is not the one exported: %v", err)
			}
		})
	}
}

// badShape counts the CALLS relationships in Neo4j that have both a port
// and a path, and those of each transport.
func badShape(t *testing.T, cfg neo4jstore.Config) (bad, tcp, unix int64) {
	t.Helper()
	r := neo4jtest.Exec(t, cfg, "MATCH ()-[r:CALLS]->() RETURN "+
		"count(CASE WHEN (r.transport = 'unix' AND r.port IS NOT NULL) OR (r.transport <> 'unix' AND r.path IS NOT NULL) THEN 1 END) AS bad, "+
		"count(CASE WHEN r.transport = 'tcp' AND r.port IS NOT NULL THEN 1 END) AS tcp, "+
		"count(CASE WHEN r.transport = 'unix' AND r.path IS NOT NULL THEN 1 END) AS unix", nil)[0]
	return r["bad"].(int64), r["tcp"].(int64), r["unix"].(int64)
}

// edgeShape checks g's CALLS edges: port and no path for TCP, path and no
// port for unix.
func edgeShape(t *testing.T, what string, g *graph.Graph) {
	t.Helper()
	for _, e := range g.Edges {
		if e.Type != graph.RelCalls {
			continue
		}
		_, port := e.Props["port"]
		_, path := e.Props["path"]
		if unix := e.Props["transport"] == "unix"; port == unix || path != unix {
			t.Errorf("%s: CALLS %s -> %s %v: want port and no path for tcp, path and no port for unix", what, e.From, e.To, e.Props)
		}
	}
}

// TestNeo4jEdgeShape: TCP CALLS are keyed by port and have no path, unix
// ones by path and have no port, in Neo4j as written, in the graph read
// from it, in the embedded store, and in the Cypher export.
func TestNeo4jEdgeShape(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	mem := memstore.New()
	for _, b := range []*graph.Batch{batch(3, 0, 1), batch(5, 2)} {
		apply(t, mem, b)
		apply(t, st, b)
	}
	if bad, tcp, unix := badShape(t, cfg); bad != 0 || tcp == 0 || unix == 0 {
		t.Errorf("in Neo4j: %d CALLS with the other transport's key, %d tcp, %d unix", bad, tcp, unix)
	}
	edgeShape(t, "read from Neo4j", neo4jtest.Graph(t, st))
	g := neo4jtest.Graph(t, mem)
	edgeShape(t, "the embedded store", g)
	var script bytes.Buffer
	if err := export.Write(&script, g, "cypher"); err != nil {
		t.Fatal(err)
	}
	port, path := regexp.MustCompile(`[^a-z_]port[^a-z_]`), regexp.MustCompile(`[^a-z_]path[^a-z_]`)
	for _, s := range migrations.Split(script.String()) {
		if strings.Contains(s, ":CALLS") && (strings.Contains(s, "transport: 'tcp'") == path.MatchString(s) ||
			strings.Contains(s, "transport: 'unix'") == port.MatchString(s)) {
			t.Errorf("export statement %q: want a tcp CALLS keyed by port without path, a unix one by path without port", s)
		}
	}
}

// TestNeo4jMigrateEdgeShape: V003 upgrades a database the writer before
// it filled, whose CALLS carry both port and path, to the one shape; the
// writer then adds to those relationships, never beside them.
func TestNeo4jMigrateEdgeShape(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	mem := memstore.New()
	b := batch(3, 0, 1)
	apply(t, mem, b)
	apply(t, st, b)
	// As the old writer left them: the other transport's key as 0 or ''.
	neo4jtest.Exec(t, cfg, "MATCH ()-[r:CALLS]->() WHERE r.transport = 'unix' SET r.port = 0", nil)
	neo4jtest.Exec(t, cfg, "MATCH ()-[r:CALLS]->() WHERE r.transport = 'tcp' SET r.path = ''", nil)
	neo4jtest.Exec(t, cfg, "MATCH (m:WeftMigration) WHERE m.version >= 3 DELETE m", nil)
	if bad, _, _ := badShape(t, cfg); bad == 0 {
		t.Fatal("no relationship of the old shape to migrate")
	}
	done, err := st.Migrate(ctx(t), "test", time.Minute)
	if err != nil || len(done) != 1 || done[0].Version != 3 {
		t.Fatalf("migrate an old database: applied %v, %v; want V003 alone", done, err)
	}
	if bad, tcp, unix := badShape(t, cfg); bad != 0 || tcp == 0 || unix == 0 {
		t.Errorf("after V003: %d CALLS with the other transport's key, %d tcp, %d unix", bad, tcp, unix)
	}
	b2 := batch(5, 2)
	apply(t, mem, b2)
	apply(t, st, b2)
	if err := neo4jtest.Compare(neo4jtest.Graph(t, mem), neo4jtest.Graph(t, st)); err != nil {
		t.Fatalf("the writer on a migrated database: %v", err)
	}
}

// TestNeo4jExportThenLiveWriter: a Cypher export loaded into a migrated
// Neo4j, and then the live writer given the same batches on top, makes no
// second relationship for any key: Neo4j holds the export's edges with
// every count doubled, as an embedded store given each batch twice.
func TestNeo4jExportThenLiveWriter(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	batches := []*graph.Batch{batch(3, 0, 1), batch(5, 2), batch(9, 3, 4)}
	once, twice := memstore.New(), memstore.New()
	for _, b := range batches {
		apply(t, once, b)
		apply(t, twice, b)
	}
	for _, b := range []*graph.Batch{batch(13, 0, 1), batch(15, 2), batch(19, 3, 4)} {
		apply(t, twice, b)
	}
	src := neo4jtest.Graph(t, once)
	var script bytes.Buffer
	if err := export.Write(&script, src, "cypher"); err != nil {
		t.Fatal(err)
	}
	statements := migrations.Split(script.String())
	for range 2 { // loading it twice changes nothing either
		if _, err := neo4jtest.Run(cfg, statements, nil); err != nil {
			t.Fatalf("load the Cypher export: %v", err)
		}
	}
	if err := neo4jtest.Compare(src, neo4jtest.Graph(t, st)); err != nil {
		t.Fatalf("the export loaded twice is not the graph exported: %v", err)
	}
	for _, b := range batches {
		apply(t, st, b)
	}
	got := neo4jtest.Graph(t, st)
	if len(got.Edges) != len(src.Edges) {
		t.Errorf("%d relationships after the live writer, the export had %d", len(got.Edges), len(src.Edges))
	}
	if err := neo4jtest.Compare(neo4jtest.Graph(t, twice), got); err != nil {
		t.Fatalf("export then live writer: not the graph of every batch twice: %v", err)
	}
}

// history reads the migration history as the store records it.
func history(t *testing.T, cfg neo4jstore.Config) []map[string]any {
	t.Helper()
	return neo4jtest.Exec(t, cfg, migrations.History, nil)
}

// TestNeo4jMigrate: up applies V001 and V002 and records each; status has
// nothing pending after; a second up changes nothing; the constraints
// exist.
func TestNeo4jMigrate(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	st := neo4jtest.Open(t, cfg)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.MigrationStatus(ctx(t))
	if err != nil || len(s.Applied) != 0 || len(s.Pending) != len(all) {
		t.Fatalf("status of a fresh database: %+v, %v", s, err)
	}
	done, err := st.Migrate(ctx(t), "test", time.Minute)
	if err != nil || len(done) != len(all) {
		t.Fatalf("up: applied %d of %d: %v", len(done), len(all), err)
	}
	h := history(t, cfg)
	if len(h) != len(all) {
		t.Fatalf("history %v, want %d entries", h, len(all))
	}
	for i, m := range all {
		v, _ := h[i]["version"].(int64)
		at, _ := h[i]["applied_at"].(string)
		if int(v) != m.Version || h[i]["description"] != m.Description || h[i]["checksum"] != m.Checksum {
			t.Errorf("history entry %d: %v, want %s with checksum %s", i, h[i], m.Name(), m.Checksum)
		}
		if _, err := time.Parse("2006-01-02T15:04:05", at[:min(len(at), 19)]); err != nil {
			t.Errorf("history entry %d: applied_at %q is no datetime: %v", i, at, err)
		}
	}
	s, err = st.MigrationStatus(ctx(t))
	if err != nil || len(s.Pending) != 0 || len(s.Applied) != len(all) {
		t.Fatalf("status after up: %+v, %v", s, err)
	}
	if err := st.CheckMigrations(ctx(t)); err != nil {
		t.Fatal(err)
	}
	done, err = st.Migrate(ctx(t), "test", time.Minute)
	if err != nil || len(done) != 0 {
		t.Fatalf("second up: applied %v, %v", done, err)
	}
	if h2 := history(t, cfg); len(h2) != len(h) || h2[0]["applied_at"] != h[0]["applied_at"] {
		t.Fatalf("second up changed the history: %v, was %v", h2, h)
	}
	names := map[string]bool{}
	for _, r := range neo4jtest.Exec(t, cfg, "SHOW CONSTRAINTS YIELD name RETURN name", nil) {
		names[r["name"].(string)] = true
	}
	for _, want := range []string{"weft_pod_uid", "weft_workload_key", "weft_stream_name", "weft_migration_version", "weft_migration_lock"} {
		if !names[want] {
			t.Errorf("constraint %s missing after up (have %v)", want, names)
		}
	}
	if n := len(neo4jtest.Exec(t, cfg, "MATCH (l:WeftMigrationLock) RETURN l", nil)); n != 0 {
		t.Errorf("the lock is still held after up (%d lock nodes)", n)
	}
}

// TestNeo4jMigrateConcurrent: ups started at once on a fresh database
// apply each migration once between them; each either applies or is told
// another holds the lock (or finds nothing left to do).
func TestNeo4jMigrateConcurrent(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	var stores []*neo4jstore.Store
	for range 4 {
		stores = append(stores, neo4jtest.Open(t, cfg))
	}
	done := make([][]migrations.Migration, len(stores))
	errs := make([]error, len(stores))
	start := make(chan struct{})
	c := ctx(t)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			<-start
			done[i], errs[i] = s.Migrate(c, fmt.Sprintf("up-%d", i), time.Minute)
		})
	}
	close(start)
	wg.Wait()
	applied := map[int]int{}
	for i, err := range errs {
		if err != nil && !errors.Is(err, neo4jstore.ErrLocked) {
			t.Errorf("up %d: %v", i, err)
		}
		for _, m := range done[i] {
			applied[m.Version]++
		}
	}
	for _, m := range all {
		if applied[m.Version] != 1 {
			t.Errorf("%s applied %d times between the ups", m.Name(), applied[m.Version])
		}
	}
	if h := history(t, cfg); len(h) != len(all) {
		t.Errorf("history has %d entries, want %d: %v", len(h), len(all), h)
	}
	if err := stores[0].CheckMigrations(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestNeo4jMigrateLock: a lock another run holds refuses up with
// ErrLocked until it expires; an expired one is taken over.
func TestNeo4jMigrateLock(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	st := neo4jtest.Open(t, cfg)
	neo4jtest.Exec(t, cfg, migrations.LockConstraint, nil)
	neo4jtest.Exec(t, cfg, migrations.Lock, map[string]any{"holder": "crashed", "ttl_seconds": int64(600)})
	if done, err := st.Migrate(ctx(t), "test", time.Hour); !errors.Is(err, neo4jstore.ErrLocked) || len(done) != 0 {
		t.Fatalf("up under another's lock: applied %v, %v; want ErrLocked", done, err)
	}
	if h := history(t, cfg); len(h) != 0 {
		t.Fatalf("up under another's lock wrote history %v", h)
	}
	neo4jtest.Exec(t, cfg, "MATCH (l:WeftMigrationLock) SET l.acquired_at = datetime() - duration({hours: 2})", nil)
	if done, err := st.Migrate(ctx(t), "test", time.Hour); err != nil || len(done) == 0 {
		t.Fatalf("up after the lock expired: applied %v, %v", done, err)
	}
	if n := len(neo4jtest.Exec(t, cfg, "MATCH (l:WeftMigrationLock) RETURN l", nil)); n != 0 {
		t.Errorf("the taken-over lock is still held after up (%d lock nodes)", n)
	}
}

// TestNeo4jMigrationEdited: an applied migration whose checksum differs
// from the file is refused by status, up, and the store's start check,
// naming it.
func TestNeo4jMigrationEdited(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	neo4jtest.Exec(t, cfg, "MATCH (m:WeftMigration {version: 1}) SET m.checksum = $sum", map[string]any{"sum": strings.Repeat("0", 64)})
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, migrations.ErrEdited) || !strings.Contains(err.Error(), "V001 constraints") {
			t.Errorf("%s with V001 edited: %v; want ErrEdited naming V001 constraints", what, err)
		}
	}
	s, err := st.MigrationStatus(ctx(t))
	check("status", err)
	all, _ := migrations.All()
	if s == nil || len(s.Applied) != len(all) {
		t.Errorf("status lists %+v as applied, want all %d", s, len(all))
	}
	_, err = st.Migrate(ctx(t), "test", time.Minute)
	check("up", err)
	check("the start check", st.CheckMigrations(ctx(t)))
	if n := len(neo4jtest.Exec(t, cfg, "MATCH (l:WeftMigrationLock) RETURN l", nil)); n != 0 {
		t.Errorf("a refused up left its lock (%d lock nodes)", n)
	}
}

// TestNeo4jPendingMigrations: the store's start check names every pending
// migration, and only those.
func TestNeo4jPendingMigrations(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	st := neo4jtest.Open(t, cfg)
	err := st.CheckMigrations(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "V001 constraints") || !strings.Contains(err.Error(), "V002 indexes") ||
		!strings.Contains(err.Error(), "weft migrate up") {
		t.Fatalf("start check on a fresh database: %v; want both migrations named and the command to run", err)
	}
	neo4jtest.Migrate(t, st)
	neo4jtest.Exec(t, cfg, "MATCH (m:WeftMigration {version: 2}) DELETE m", nil)
	err = st.CheckMigrations(ctx(t))
	if err == nil || strings.Contains(err.Error(), "V001") || !strings.Contains(err.Error(), "V002 indexes") {
		t.Fatalf("start check with V002 unrecorded: %v; want V002 named, V001 not", err)
	}
}

// TestNeo4jNamedQueries: every named query gives the same answer from
// Neo4j (its Cypher) and from the embedded store (Go over its graph),
// both given the same batches; the answers are the ones the traffic
// makes.
func TestNeo4jNamedQueries(t *testing.T) {
	_, st := neo4jtest.Migrated(t)
	namedQueries(t, st)
}

// TestNeo4jCalendarRelease: the newest calendar release of Neo4j (after
// the 5.26 LTS, releases are named by year and month, and run on Java 21)
// takes weft's migrations, holds the same graph as the embedded store,
// and answers every named query the same way. Its JDK is found as
// testenv/neo4j.FindJava says; with none, the test skips (fails in CI).
func TestNeo4jCalendarRelease(t *testing.T) {
	cfg, _ := neo4jtest.OwnWith(t, testneo4j.Options{Release: testneo4j.Calendar})
	st := neo4jtest.Open(t, cfg)
	neo4jtest.Migrate(t, st)
	if err := st.CheckMigrations(ctx(t)); err != nil {
		t.Fatal(err)
	}
	namedQueries(t, st)
	mem := memstore.New()
	for _, b := range []*graph.Batch{batch(3, 0, 1), batch(5, 2), batch(9, 3, 4)} {
		apply(t, mem, b)
	}
	if err := neo4jtest.Compare(neo4jtest.Graph(t, mem), neo4jtest.Graph(t, st)); err != nil {
		t.Fatalf("%s holds another graph than the embedded store: %v", testneo4j.Calendar, err)
	}
}

// namedQueries gives st and the embedded store the same batches and wants
// the same answer from both to every named query.
func namedQueries(t *testing.T, st *neo4jstore.Store) {
	t.Helper()
	mem := memstore.New()
	for _, b := range []*graph.Batch{batch(3, 0, 1), batch(5, 2), batch(9, 3, 4)} {
		apply(t, mem, b)
		apply(t, st, b)
	}
	g := neo4jtest.Graph(t, mem)
	cases := []struct {
		query string
		args  []string
		want  string // one row the answer must hold, as fmt prints it
	}{
		{"callers", []string{"nats-0"}, "[app-7d9f nats-0 tcp 4222 5 10510 0]"},
		{"callers", []string{"signer"}, "[orders signer unix /var/run/crypto-broker.sock 5 2890 0]"},
		{"callers", []string{"nobody"}, ""},
		{"callees", []string{"/usr/bin/curl"}, "[/usr/bin/curl 93.184.216.34 tcp 443 5 0 2]"},
		{"blast-radius", []string{"node-a"}, "[app-7d9f 93.184.216.34]"},
		{"blast-radius", []string{"node-b"}, "[nats-0 app-7d9f]"},
		{"brokers", nil, "[nats-0 nats 1]"},
		{"edges-since", []string{strconv.FormatUint(scenario.T0, 10)}, "[app-7d9f nats-0 tcp 4222"},
		{"edges-since", []string{strconv.FormatUint(scenario.T0+10e9, 10)}, ""},
		{"top-talkers", []string{"2"}, "[10510 app-7d9f nats-0 tcp 4222]"},
		{"ended-since", []string{strconv.FormatUint(scenario.T0, 10)}, fmt.Sprintf("[shop orders-5c8b %d]", ordersEnded)},
		{"ended-since", []string{strconv.FormatUint(ordersEnded+1, 10)}, ""},
	}
	for _, c := range cases {
		t.Run(c.query+" "+strings.Join(c.args, " "), func(t *testing.T) {
			q := query.Find(c.query)
			arg, err := q.Parse(c.args)
			if err != nil {
				t.Fatal(err)
			}
			emb := q.Embedded(g, arg)
			neo, err := st.Answer(ctx(t), q, arg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(emb, neo) {
				t.Fatalf("the stores answer differently:\n embedded %v\n neo4j    %v", emb, neo)
			}
			if c.want == "" {
				if len(neo.Rows) != 0 {
					t.Fatalf("rows %v, want none", neo.Rows)
				}
				return
			}
			var rows []string
			for _, r := range neo.Rows {
				rows = append(rows, fmt.Sprint(r))
			}
			if !slices.ContainsFunc(rows, func(r string) bool { return strings.HasPrefix(r, strings.TrimSuffix(c.want, "]")) }) {
				t.Fatalf("rows %v, want one %s", rows, c.want)
			}
		})
	}
	if q := query.Find("top-talkers"); len(mustAnswer(t, st, q, int64(2)).Rows) != 2 {
		t.Error("top-talkers 2: not 2 rows")
	}
}

func mustAnswer(t *testing.T, st *neo4jstore.Store, q *query.Query, arg any) *query.Result {
	t.Helper()
	r, err := st.Answer(ctx(t), q, arg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
