package neo4jstore_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// closedPort returns a loopback port nothing listens on (it was free a
// moment ago).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// openAndCheck does what the graph stage does at start: open, check the
// migrations, read the cursor.
func openAndCheck(ctx context.Context, cfg neo4jstore.Config) error {
	st, err := neo4jstore.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	if err := st.CheckMigrations(ctx); err != nil {
		return err
	}
	_, err = st.LastSeq(ctx)
	return err
}

// waitLogin waits until cfg's credentials are accepted again: Neo4j
// refuses a user for a while after repeated failed logins.
func waitLogin(t *testing.T, cfg neo4jstore.Config) {
	t.Helper()
	natstest.CheckFor(t, time.Minute, 250*time.Millisecond, func() error {
		_, err := neo4jtest.Run(cfg, []string{"RETURN 1 AS one"}, nil)
		return err
	})
}

// TestNeo4jBadConfig: each way Neo4j can refuse the store's
// configuration gives one line naming the URI and the reason, and is
// IsUnavailable (the graph stage waits for it rather than failing).
func TestNeo4jBadConfig(t *testing.T) {
	good, _ := neo4jtest.Migrated(t)
	for _, tc := range []struct {
		name string
		mod  func(*neo4jstore.Config)
		want string
	}{
		{"wrong password", func(c *neo4jstore.Config) { c.Password += "-wrong" },
			"neo4j " + good.URI + ": authentication failed for user neo4j (check WEFT_NEO4J_USER and WEFT_NEO4J_PASSWORD)"},
		{"wrong database", func(c *neo4jstore.Config) { c.Database = "nope" },
			"neo4j " + good.URI + `: read migration history: database "nope" does not exist`},
		{"nothing listening", func(c *neo4jstore.Config) { c.URI = fmt.Sprintf("bolt://127.0.0.1:%d", closedPort(t)) },
			"cannot connect: dial tcp 127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			err := openAndCheck(ctx(t), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") ||
				!strings.HasPrefix(err.Error(), "neo4j "+cfg.URI+": ") || !neo4jstore.IsUnavailable(err) {
				t.Fatalf("error %q (unavailable: %v): want one line starting with %q, saying %q, unavailable",
					err, neo4jstore.IsUnavailable(err), "neo4j "+cfg.URI+": ", tc.want)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
	waitLogin(t, good)
}

// TestNeo4jConstraintViolation: a batch that breaks a constraint (one a
// user added: Pod names unique) fails whole, with one line naming the URI,
// the statement and the constraint; it is not IsUnavailable, and the
// store's sequence stays where it was, so the batch's calls are not lost:
// they are written once the constraint goes.
func TestNeo4jConstraintViolation(t *testing.T) {
	cfg, st := neo4jtest.Migrated(t)
	apply(t, st, batch(1, 0))
	neo4jtest.Exec(t, cfg, "CREATE CONSTRAINT weft_test_pod_name FOR (p:Pod) REQUIRE p.name IS UNIQUE", nil)
	f := graph.NewFold(graph.DefaultBrokers, nil)
	for _, c := range traffic(1) {
		if c.GetClient().GetPod().GetUid() == "uid-app" {
			c.Client.Pod = &schema.Pod{Uid: "uid-app-2", Name: "nats-0", Namespace: "infra", Node: "node-a"} // nats-0's name, another uid
		}
		f.Add(c)
	}
	b := f.Take(2)
	err := st.Apply(ctx(t), b)
	want := []string{"neo4j " + cfg.URI + ": apply batch up to CALLS seq 2: ", `statement "upsert Pod": constraint violated: `,
		"nats-0", "Neo.ClientError.Schema.ConstraintValidationFailed"}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) || strings.Contains(err.Error(), "\n") || neo4jstore.IsUnavailable(err) {
			t.Fatalf("apply against the constraint: %v; want one line saying %q, not unavailable", err, w)
		}
	}
	t.Logf("constraint: %v", err)
	if n := lastSeq(t, st); n != 1 {
		t.Fatalf("after the failed batch the store is at sequence %d, want 1", n)
	}
	neo4jtest.Exec(t, cfg, "DROP CONSTRAINT weft_test_pod_name", nil)
	apply(t, st, b)
	if n := lastSeq(t, st); n != 2 {
		t.Fatalf("after the constraint went the store is at sequence %d, want 2", n)
	}
}
