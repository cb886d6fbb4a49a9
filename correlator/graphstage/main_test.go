package graphstage_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// TestMain stops the package's Neo4j (see package neo4jtest) after the
// tests. With childEnv set the test binary is instead a graph stage
// process for the crash tests (see startChild).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "graph stage child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(neo4jtest.RunTests(m))
}

// childEnv carries "NATS_URL ACKWAIT" to a child graph stage; the Neo4j
// store reads WEFT_NEO4J_URI, _USER and _PASSWORD.
const childEnv = "WEFT_TEST_GRAPH_CHILD"

// runChild runs a graph stage on Neo4j until it is killed: the graph
// stage process of a crash test. It prints "started" once it consumes.
func runChild() error {
	args := strings.Fields(os.Getenv(childEnv))
	if len(args) != 2 {
		return fmt.Errorf("%s=%q: want NATS_URL ACKWAIT", childEnv, os.Getenv(childEnv))
	}
	ackWait, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	nc, err := nats.Connect(args[0])
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := graphstage.NewConfig()
	cfg.Store, cfg.Neo4j, cfg.FlushInterval, cfg.AckWait = graphstage.StoreNeo4j, neo4jstore.Config{}, 20*time.Millisecond, ackWait
	g, err := graphstage.New(stage.Settings{Name: "graph", Kind: "graph", Node: "ctl",
		Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: cfg, Counters: &stage.Counters{}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := g.Start(ctx, stagetest.NewHost(js)); err != nil {
		return err
	}
	fmt.Println("started")
	select {} // until SIGKILL
}

// startChild starts a graph stage process on Neo4j cfg reading natsURL,
// waits until it consumes, and returns it; it is killed when t ends.
func startChild(t *testing.T, cfg neo4jstore.Config, natsURL string, ackWait time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+natsURL+" "+ackWait.String(),
		"WEFT_NEO4J_URI="+cfg.URI, "WEFT_NEO4J_USER="+cfg.User, "WEFT_NEO4J_PASSWORD="+cfg.Password)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kill(cmd) })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "started" {
		kill(cmd)
		t.Fatalf("graph stage process %d: said %q (%v), want started", cmd.Process.Pid, line, err)
	}
	return cmd
}

// kill SIGKILLs cmd's process group and reaps it; it is idempotent.
func kill(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}
