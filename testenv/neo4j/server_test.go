package neo4j_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"

	testneo4j "github.com/weftobs/weft/testenv/neo4j"
)

// login runs RETURN 1 as user with password and returns the error.
func login(ctx context.Context, uri, user, password string) error {
	d, err := neo4j.NewDriverWithContext(uri, neo4j.BasicAuth(user, password, ""))
	if err != nil {
		return err
	}
	defer d.Close(ctx)
	_, err = neo4j.ExecuteQuery(ctx, d, "CREATE (n:WeftTestMarker) RETURN count(n) AS n", nil, neo4j.EagerResultTransformer)
	return err
}

// TestStartStopRestart: a started server takes logins with its generated
// password only; Stop ends its JVM; a restart on the same directory and
// port reopens the same database; Kill ends it at once.
func TestStartStopRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts a JVM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := testneo4j.Start(ctx, testneo4j.Options{Dir: t.TempDir()})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skipf("skipped: no Neo4j here: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("neo4j logs: %s", strings.Join(s.Logs(), " "))
		}
	})
	defer s.Kill()
	if !strings.HasPrefix(s.URI, "bolt://127.0.0.1:") || s.Port == 0 || len(s.Password) < 16 || s.User != "neo4j" {
		t.Fatalf("server %+v", s)
	}
	if err := login(ctx, s.URI, s.User, s.Password); err != nil {
		t.Fatalf("login with the generated password: %v", err)
	}
	for _, pw := range []string{"neo4j", "wrong-password"} {
		var nerr *neo4j.Neo4jError
		if err := login(ctx, s.URI, s.User, pw); !errors.As(err, &nerr) || !strings.Contains(nerr.Code, "Security") {
			t.Errorf("login with password %q: %v, want a security error", pw, err)
		}
	}

	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := login(ctx, s.URI, s.User, s.Password); err == nil {
		t.Fatal("login after Stop succeeded")
	}

	r, err := s.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.URI != s.URI {
		t.Fatalf("restart at %s, want %s", r.URI, s.URI)
	}
	d, err := neo4j.NewDriverWithContext(r.URI, neo4j.BasicAuth(r.User, r.Password, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	res, err := neo4j.ExecuteQuery(ctx, d, "MATCH (n:WeftTestMarker) RETURN count(n) AS n", nil, neo4j.EagerResultTransformer)
	if err != nil {
		t.Fatal(err)
	}
	// One marker per successful login before the restart: one.
	if n, _ := res.Records[0].Get("n"); n != int64(1) {
		t.Fatalf("markers after restart: %v, want the 1 written before", n)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-r.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d after Kill: %v", r.PID(), err)
	}
}
