package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/streams/schema"
)

// TestNeo4jMigrateCommand runs `weft migrate status|up` as users do,
// against a real Neo4j (package neo4jtest says which; the database is
// wiped first): status lists both
// migrations pending, up applies them, status then lists them applied and
// nothing pending, a second up is up to date; ups started at once apply
// each migration once between them; an edited migration makes both exit
// 1 naming it.
func TestNeo4jMigrateCommand(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	t.Setenv("WEFT_NEO4J_PASSWORD", cfg.Password) // not in argv, where ps shows it
	args := func(sub string) []string {
		return []string{"migrate", sub, "--neo4j-uri", cfg.URI, "--neo4j-user", cfg.User, "--neo4j-database", cfg.Database}
	}
	weft := func(sub string) (stdout, stderr string, err error) {
		t.Helper()
		p := start(t, args(sub)...)
		err = <-p.done
		return p.stdout.String(), p.stderr.String(), err
	}
	out, errOut, err := weft("status")
	if err != nil || !strings.Contains(out, "pending  V001 constraints") || !strings.Contains(out, "pending  V002 indexes") {
		t.Fatalf("status of a fresh database: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = weft("up")
	if err != nil || out != "applied  V001 constraints\napplied  V002 indexes\napplied  V003 calls edge shape\n" {
		t.Fatalf("up: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = weft("status")
	if err != nil || !strings.Contains(out, "applied  V001 constraints") || !strings.Contains(out, "applied  V002 indexes") || strings.Contains(out, "pending") {
		t.Fatalf("status after up: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err = weft("up"); err != nil || out != "up to date\n" {
		t.Fatalf("second up: %v\n%s%s", err, out, errOut)
	}

	neo4jtest.Reset(t, cfg)
	var ups []*proc
	for range 3 {
		ups = append(ups, start(t, args("up")...))
	}
	applied := 0
	for i, p := range ups {
		if err := <-p.done; err != nil && !strings.Contains(p.stderr.String(), "another weft migrate holds the migration lock") {
			t.Errorf("concurrent up %d: %v\n%s", i, err, p.stderr)
		}
		applied += strings.Count(p.stdout.String(), "applied  V001 constraints")
	}
	if applied != 1 {
		t.Errorf("V001 applied %d times by three concurrent ups", applied)
	}
	if out, errOut, err = weft("status"); err != nil || strings.Contains(out, "pending") {
		t.Fatalf("status after concurrent ups: %v\n%s%s", err, out, errOut)
	}

	neo4jtest.Exec(t, cfg, "MATCH (m:WeftMigration {version: 1}) SET m.checksum = $sum", map[string]any{"sum": strings.Repeat("0", 64)})
	for _, sub := range []string{"status", "up"} {
		_, errOut, err := weft(sub)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(errOut, "applied migration was edited") ||
			!strings.Contains(errOut, "V001 constraints") {
			t.Errorf("%s with V001 edited: %v, want exit 1 naming V001 constraints as edited; stderr:\n%s", sub, err, errOut)
		}
	}
}

// TestNeo4jGraphQueryCommand: `weft graph query` prints the same answer
// for each named query from an embedded store's data dir and from Neo4j,
// both given the same calls.
func TestNeo4jGraphQueryCommand(t *testing.T) {
	cfg := neo4jtest.Fresh(t)
	t.Setenv("WEFT_NEO4J_PASSWORD", cfg.Password)
	st := neo4jtest.Open(t, cfg)
	neo4jtest.Migrate(t, st)
	f := graph.NewFold(graph.DefaultBrokers, nil)
	app := &schema.Endpoint{Node: "node-a", Pod: &schema.Pod{Uid: "u-app", Name: "app", Namespace: "shop", Node: "node-a"},
		Container: &schema.Container{Id: "c-app", Name: "app"}}
	nats := &schema.Endpoint{Node: "node-b", Pod: &schema.Pod{Uid: "u-nats", Name: "nats-0", Namespace: "infra", Node: "node-b",
		Labels: map[string]string{"app.kubernetes.io/name": "nats"}}, Container: &schema.Container{Id: "c-nats", Name: "nats"}}
	sidecar := &schema.Endpoint{Node: "node-a", Pod: app.Pod, Container: &schema.Container{Id: "c-side", Name: "signer"}}
	for i := range 5 {
		at := uint64(1767225600000000000 + i*1e9)
		f.Add(&schema.Call{Id: fmt.Sprint("t", i), Transport: schema.Transport_TRANSPORT_TCP, Port: 4222, Client: app, Server: nats,
			BytesSent: uint64(10 * i), BytesReceived: 100, StartUnixNano: at, EndUnixNano: at + 5})
		f.Add(&schema.Call{Id: fmt.Sprint("u", i), Transport: schema.Transport_TRANSPORT_UNIX, Path: "/run/s.sock", Client: app, Server: sidecar,
			BytesSent: 1, BytesReceived: 2, StartUnixNano: at, EndUnixNano: at + 5})
	}
	b := f.Take(1)
	dir := t.TempDir()
	mem := memstore.New()
	for _, s := range []graph.Store{mem, st} {
		if err := s.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := mem.Save(dir); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"callers", "nats-0"}, {"callees", "app"}, {"blast-radius", "node-a"}, {"brokers"},
		{"edges-since", "1767225600000000000"}, {"top-talkers", "2"}} {
		run := func(source ...string) string {
			p := start(t, append(append([]string{"graph", "query"}, args...), source...)...)
			if err := <-p.done; err != nil {
				t.Fatalf("weft graph query %v %v: %v\n%s", args, source, err, p.stderr)
			}
			return p.stdout.String()
		}
		emb, neo := run("--data-dir", dir), run("--neo4j-uri", cfg.URI)
		if emb != neo || strings.Count(neo, "\n") < 2 {
			t.Errorf("weft graph query %v: from the data dir\n%s\nfrom Neo4j\n%s", args, emb, neo)
		}
	}
}
