// Package neo4jtest gates and prepares weft's Neo4j integration tests, so
// every one of them finds, and touches, a database the same way.
//
// Where the database is: when WEFT_NEO4J_URI names a Neo4j 5 server, the
// tests use it (the user and password from WEFT_NEO4J_USER and
// WEFT_NEO4J_PASSWORD, the database from WEFT_NEO4J_DATABASE, default
// "neo4j"). Otherwise the first test of a package that asks starts a real
// Neo4j Community for the package (package testenv/neo4j: a child JVM, Bolt
// on loopback, a generated password), and RunTests stops it when the
// package's tests are done. When that Neo4j cannot be started (no Java or
// Maven, say) the tests skip with SkipMessage and the reason, except in CI
// (CI=true), where they fail: in CI every Neo4j test runs.
//
// What a test does to that database: it deletes everything in it
// (MATCH (n) DETACH DELETE n), drops every constraint and index whose name
// starts with weft_, and writes one (:WeftTestMarker) node; then it
// migrates and writes as it likes. So that this never destroys a graph
// that matters, Fresh fails the test unless the database is empty, or
// holds nothing but weft's labels and the marker an earlier run left, or
// WEFT_NEO4J_TEST_WIPE=1 says to wipe it whatever it holds. A production
// weft graph has no marker, so it is refused too. Neo4j Community has one
// user database; with Enterprise, point WEFT_NEO4J_DATABASE at a scratch
// database (CREATE DATABASE weft_test).
//
// go test runs the test binaries of several packages at once, and with
// WEFT_NEO4J_URI they would wipe each other's database: Fresh then takes a
// lock file in the temp dir, one per URI and database, for the test's
// duration.
// The tests must not call t.Parallel.
//
// Like the store, it imports the Neo4j driver; only tests import it. The
// Cypher it sends is in package testcypher, which the linter's statement
// list includes.
package neo4jtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest/testcypher"
	"github.com/weftobs/weft/testenv/natstest"
	testneo4j "github.com/weftobs/weft/testenv/neo4j"
)

// Environment variables the tests read, beyond the store's own
// WEFT_NEO4J_URI, WEFT_NEO4J_USER and WEFT_NEO4J_PASSWORD.
const (
	DatabaseEnv = "WEFT_NEO4J_DATABASE"
	WipeEnv     = "WEFT_NEO4J_TEST_WIPE"
)

// SkipMessage is what every Neo4j integration test says when it skips,
// followed by why the local Neo4j could not start.
const SkipMessage = "skipped: no Neo4j here: the Neo4j integration tests start a Neo4j Community " +
	"(package testenv/neo4j, which needs Java 17+ and Maven), or use the one WEFT_NEO4J_URI (bolt://…) names " +
	"(with WEFT_NEO4J_USER, WEFT_NEO4J_PASSWORD, and WEFT_NEO4J_DATABASE if not neo4j; " +
	"they wipe that database, see package neo4jtest); in CI (CI=true) they fail instead"

// Timeout bounds each statement a helper runs, and the wait for the lock.
const Timeout = 8 * time.Minute

// StartTimeout bounds building and starting a local Neo4j: the first
// build downloads it.
const StartTimeout = 10 * time.Minute

// Config returns the target database: the user's from the environment, or
// the package's local Neo4j, started at the first call (stopped by RunTests). When there is
// none it skips t (fails it in CI) with SkipMessage and the reason.
func Config(t testing.TB) neo4jstore.Config {
	t.Helper()
	if uri := os.Getenv("WEFT_NEO4J_URI"); uri != "" {
		cfg := neo4jstore.Config{URI: uri, Database: os.Getenv(DatabaseEnv)}
		cfg.FromEnv()
		if err := cfg.Validate(); err != nil {
			t.Fatalf("WEFT_NEO4J_URI: %v", err)
		}
		return cfg
	}
	srv, err := local()
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the local Neo4j's logs: %s", strings.Join(srv.Logs(), " "))
		}
	})
	return configOf(srv)
}

// Own starts a Neo4j for t alone, which t may stop and restart (the fault
// tests do), whether or not WEFT_NEO4J_URI is set: the user's cannot be
// stopped. It is killed when t ends; its logs are named if t failed.
func Own(t testing.TB) (neo4jstore.Config, *testneo4j.Server) {
	t.Helper()
	return OwnWith(t, testneo4j.Options{})
}

// OwnWith is Own with options for the server: another release, more
// configuration. Its Dir is made here.
func OwnWith(t testing.TB, o testneo4j.Options) (neo4jstore.Config, *testneo4j.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "weft-neo4j-"+strings.NewReplacer("/", "_").Replace(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	o.Dir = dir
	srv, err := testneo4j.Start(ctx, o)
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(func() {
		_ = srv.Kill()
		if t.Failed() {
			t.Logf("this test's Neo4j's logs (kept): %s", strings.Join(srv.Logs(), " "))
			return
		}
		_ = os.RemoveAll(dir)
	})
	return configOf(srv), srv
}

func configOf(srv *testneo4j.Server) neo4jstore.Config {
	cfg := neo4jstore.Config{URI: srv.URI, User: srv.User, Password: srv.Password}
	cfg.FromEnv()
	return cfg
}

// Unavailable stops t because no Neo4j could be had, for reason: it skips
// with SkipMessage, or fails in CI (CI=true), where every Neo4j test must
// run.
func Unavailable(t testing.TB, reason error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and no Neo4j: every Neo4j test must run in CI: %v", reason)
	}
	t.Skip(SkipMessage + ": " + reason.Error())
}

// The package's local Neo4j, started by the first test that asks.
var (
	localOnce sync.Once
	localSrv  *testneo4j.Server
	localErr  error
)

func local() (*testneo4j.Server, error) {
	localOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		defer cancel()
		localSrv, localErr = testneo4j.Start(ctx, testneo4j.Options{})
	})
	return localSrv, localErr
}

// RunTests runs a test package whose tests use Neo4j and returns m.Run's
// code: call os.Exit(neo4jtest.RunTests(m)) from TestMain. After the tests it
// stops the local Neo4j if one was started, and removes its directory
// unless a test failed.
func RunTests(m *testing.M) int {
	code := m.Run()
	if localSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := localSrv.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "neo4jtest: %v\n", err)
		}
		cancel()
		if code == 0 {
			_ = os.RemoveAll(localSrv.Dir)
		} else {
			fmt.Fprintf(os.Stderr, "neo4jtest: the local Neo4j's logs are kept: %s\n", strings.Join(localSrv.Logs(), " "))
		}
	}
	return code
}

// Fresh gates t on a Neo4j (see Config), takes the database for the test's
// duration, refuses it if it may hold a graph that matters, and wipes it
// (see the package doc).
func Fresh(t testing.TB) neo4jstore.Config {
	t.Helper()
	cfg := Config(t)
	lock(t, cfg)
	Reset(t, cfg)
	return cfg
}

// Migrated is Fresh, then the migrations applied by a store of the test.
func Migrated(t testing.TB) (neo4jstore.Config, *neo4jstore.Store) {
	t.Helper()
	cfg := Fresh(t)
	st := Open(t, cfg)
	Migrate(t, st)
	return cfg, st
}

// Open opens a store on cfg, closed when the test ends.
func Open(t testing.TB, cfg neo4jstore.Config) *neo4jstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	st, err := neo4jstore.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open the Neo4j store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

// Migrate applies the pending migrations with st.
func Migrate(t testing.TB, st *neo4jstore.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := st.Migrate(ctx, "neo4jtest "+t.Name(), time.Minute); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

var weftName = regexp.MustCompile(`^weft_[A-Za-z0-9_]+$`)

// Reset checks that the database may be wiped and wipes it (see the
// package doc). A test that already holds it (Fresh) calls it to start
// over, e.g. to replay into an empty database.
func Reset(t testing.TB, cfg neo4jstore.Config) {
	t.Helper()
	c := Exec(t, cfg, testcypher.Census, nil)[0]
	total, _ := c["total"].(int64)
	marked, _ := c["marked"].(int64)
	foreign, _ := c["foreign"].(int64)
	if total > 0 && (marked == 0 || foreign > 0) && os.Getenv(WipeEnv) != "1" {
		t.Fatalf("refusing to wipe Neo4j database %q at %s: it holds %d nodes, %d of labels weft does not write, and %d test markers. "+
			"The Neo4j integration tests delete everything in their database and drop weft's constraints and indexes, so they use "+
			"only one that is empty or holds nothing but weft's labels and the (:WeftTestMarker) an earlier run left: "+
			"point WEFT_NEO4J_URI (and %s) at such a database, or set %s=1 to wipe this one",
			cfg.Database, cfg.URI, total, foreign, marked, DatabaseEnv, WipeEnv)
	}
	Exec(t, cfg, testcypher.WipeAll, nil)
	for _, q := range []struct{ show, drop string }{{testcypher.ShowConstraints, testcypher.DropConstraint}, {testcypher.ShowIndexes, testcypher.DropIndex}} {
		for _, row := range Exec(t, cfg, q.show, nil) {
			name, _ := row["name"].(string)
			if !weftName.MatchString(name) {
				t.Fatalf("%s: unexpected name %q", q.show, name)
			}
			Exec(t, cfg, fmt.Sprintf(q.drop, name), nil)
		}
	}
	Exec(t, cfg, testcypher.Mark, map[string]any{"note": "the weft Neo4j integration tests wipe this database (package neo4jtest)"})
}

// Exec runs one statement in an auto-commit transaction, as cypher-shell
// does, and returns its rows.
func Exec(t testing.TB, cfg neo4jstore.Config, cypher string, params map[string]any) []map[string]any {
	t.Helper()
	rows, err := Run(cfg, []string{cypher}, params)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// Run runs statements in order, each in its own auto-commit transaction
// as cypher-shell runs a file, over one connection, and returns the rows
// of the last.
func Run(cfg neo4jstore.Config, statements []string, params map[string]any) (rows []map[string]any, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	d, err := neo4j.NewDriverWithContext(cfg.URI, neo4j.BasicAuth(cfg.User, cfg.Password, ""))
	if err != nil {
		return nil, fmt.Errorf("neo4j %s: %w", cfg.URI, err)
	}
	defer func() { err = errors.Join(err, d.Close(ctx)) }()
	sess := d.NewSession(ctx, neo4j.SessionConfig{DatabaseName: cfg.Database})
	defer func() { err = errors.Join(err, sess.Close(ctx)) }()
	for i, s := range statements {
		res, err := sess.Run(ctx, s, params)
		if err != nil {
			return nil, fmt.Errorf("statement %d %q: %w", i+1, s, err)
		}
		recs, err := res.Collect(ctx)
		if err != nil {
			return nil, fmt.Errorf("statement %d %q: %w", i+1, s, err)
		}
		rows = rows[:0]
		for _, r := range recs {
			rows = append(rows, r.AsMap())
		}
	}
	return rows, nil
}

// Graph reads st's whole graph.
func Graph(t testing.TB, st graph.Reader) *graph.Graph {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	g, err := st.Graph(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Compare returns nil when want and got are the same graph: the same text
// from `weft graph export --format json`, whichever store each came from.
// Otherwise its error names the nodes and relationships that differ (the
// first ten).
func Compare(want, got *graph.Graph) error {
	w, err := canonical(want)
	if err != nil {
		return err
	}
	g, err := canonical(got)
	if err != nil || w == g {
		return err
	}
	wi, gi := elements(want), elements(got)
	var diffs []string
	for k, wv := range wi {
		switch gv, ok := gi[k]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s missing (want %s)", k, wv))
		case gv != wv:
			diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", k, gv, wv))
		}
	}
	for k, gv := range gi {
		if _, ok := wi[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s unexpected: %s", k, gv))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("and %d more", len(diffs)-10))
	}
	if len(diffs) == 0 {
		diffs = []string{"the same nodes and relationships, but not the same export"}
	}
	return fmt.Errorf("graphs differ (want %d nodes and %d relationships, got %d and %d):\n  %s",
		len(want.Nodes), len(want.Edges), len(got.Nodes), len(got.Edges), strings.Join(diffs, "\n  "))
}

// canonical is g as `weft graph export --format json` prints it, sorted.
func canonical(g *graph.Graph) (string, error) {
	g.Sort()
	var b bytes.Buffer
	err := export.Write(&b, g, "json")
	return b.String(), err
}

// elements indexes g's nodes by id and its relationships by their ends,
// type and key, each to its JSON.
func elements(g *graph.Graph) map[string]string {
	out := map[string]string{}
	for _, n := range g.Nodes {
		data, _ := json.Marshal(n)
		out["node "+n.ID] = string(data)
	}
	for _, e := range g.Edges {
		data, _ := json.Marshal(e.Props)
		k := fmt.Sprintf("%s -[%s %v %v %v]-> %s", e.From, e.Type, e.Props["transport"], e.Props["port"], e.Props["path"], e.To)
		out[k] = string(data)
	}
	return out
}

// inProcess serialises the tests of one binary; the lock file, binaries.
var inProcess sync.Mutex

// lock holds the database for t: within the process, then, for the
// user's database (WEFT_NEO4J_URI), across processes with an flock on a
// file named for the URI and database. The package's own Neo4j is no
// other process's.
func lock(t testing.TB, cfg neo4jstore.Config) {
	t.Helper()
	natstest.CheckFor(t, Timeout, 50*time.Millisecond, func() error {
		if !inProcess.TryLock() {
			return errors.New("another test of this package holds the Neo4j test database (Neo4j tests must not be parallel)")
		}
		return nil
	})
	if os.Getenv("WEFT_NEO4J_URI") == "" {
		t.Cleanup(inProcess.Unlock)
		return
	}
	sum := sha256.Sum256([]byte(cfg.URI + "\x00" + cfg.Database))
	path := filepath.Join(os.TempDir(), "weft-neo4j-test-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		inProcess.Unlock()
		t.Fatalf("neo4j test lock: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
		inProcess.Unlock()
	})
	natstest.CheckFor(t, Timeout, 100*time.Millisecond, func() error {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return fmt.Errorf("another test process holds the Neo4j test database (lock %s): %w", path, err)
		}
		return nil
	})
}
