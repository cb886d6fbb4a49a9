package correlate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/node"
	"github.com/weftobs/weft/testenv/workload"
)

// TestKernelLongConnection: an app pod holds a TCP connection to the
// broker pod open for 30 s, exchanging bytes every second. Through the
// real collector (its sweep and progress passes), the correlator and the
// graph stage, the edge is in /api/v1/graph while the connection is open,
// counted once; its bytes follow what the client has exchanged; after
// the close its totals are exact and its count still 1.
func TestKernelLongConnection(t *testing.T) {
	s, tr := kernelNode(t, "node-l")
	gcfg := graphstage.NewConfig()
	gcfg.FlushInterval = 20 * time.Millisecond
	host := stagetest.NewHost(s.JS)
	gs, err := graphstage.New(stage.Settings{Name: "graph", Kind: "graph", Node: "ctl", DataDir: t.TempDir(),
		Inputs: []stage.Stream{{Name: schema.StreamCalls}}, Config: gcfg, Counters: &stage.Counters{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Start(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gs.Shutdown(context.Background()) })

	const up, down = 1000, 3000
	app, broker := tr.App.Container("app"), tr.Broker.Container("broker")
	srv := command(t, broker, "holdserver", "tcp", "0.0.0.0:7200", fmt.Sprint(up), fmt.Sprint(down))
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startCmd(t, srv)
	if l := line(t, bufio.NewScanner(srvOut)); !strings.HasPrefix(l, "listening ") {
		t.Fatalf("server: %q", l)
	}
	cli := command(t, app, "holdclient", "tcp", tr.Broker.IP+":7200", fmt.Sprint(up), fmt.Sprint(down))
	steps, err := cli.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cliPipe, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startCmd(t, cli)
	cliOut := bufio.NewScanner(cliPipe)
	if l := line(t, cliOut); !strings.HasPrefix(l, "local ") {
		t.Fatalf("client: %q", l)
	}

	// edge is the app → broker CALLS edge on port 7200: count, sent, received.
	edge := func() (graph.GEdge, error) {
		rec := host.Get("/api/v1/graph")
		var g graph.Graph
		if err := json.Unmarshal(rec.Body.Bytes(), &g); err != nil {
			return graph.GEdge{}, err
		}
		for _, e := range g.Edges {
			if e.Type == graph.RelCalls && e.From == "Pod:"+tr.App.UID && e.To == "Pod:"+tr.Broker.UID && e.Props["port"] == float64(7200) {
				return e, nil
			}
		}
		return graph.GEdge{}, fmt.Errorf("no edge app → broker:7200 among %d edges", len(g.Edges))
	}
	expectEdge := func(what string, sent, received int) {
		t.Helper()
		natstest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
			e, err := edge()
			if err != nil {
				return err
			}
			if e.Props["count"] != float64(1) || e.Props["bytes_sent"] != float64(sent) || e.Props["bytes_received"] != float64(received) {
				return fmt.Errorf("%s: edge count %v bytes %v/%v, want 1 and %d/%d", what, e.Props["count"], e.Props["bytes_sent"], e.Props["bytes_received"], sent, received)
			}
			return nil
		})
	}
	// Open, nothing exchanged yet: the edge is there, counted once.
	expectEdge("open", 0, 0)
	begin := time.Now()
	var sent, received int
	for i := 0; time.Since(begin) < 30*time.Second; i++ {
		if _, err := fmt.Fprintln(steps, "step"); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscanf(line(t, cliOut), "sent %d received %d", &sent, &received); err != nil {
			t.Fatal(err)
		}
		expectEdge(fmt.Sprintf("step %d, open %v", i, time.Since(begin).Round(time.Second)), sent, received)
	}
	steps.Close() // the client closes
	for _, c := range []*exec.Cmd{cli, srv} {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	expectEdge("closed", sent, received)

	// On CALLS: one OPEN and one CLOSE of the connection, PROGRESS between.
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		states := map[schema.CallState]int{}
		for _, c := range stagetest.ReadCalls(t, s.JS) {
			if c.GetServer().GetPod().GetUid() == tr.Broker.UID && c.GetPort() == 7200 {
				states[c.GetState()]++
			}
		}
		if states[schema.CallState_CALL_STATE_OPEN] != 1 || states[schema.CallState_CALL_STATE_CLOSE] != 1 || states[schema.CallState_CALL_STATE_UNSPECIFIED] != 0 || states[schema.CallState_CALL_STATE_PROGRESS] < 25 {
			return fmt.Errorf("emissions by state %v: want 1 OPEN, 1 CLOSE, a PROGRESS per step", states)
		}
		return nil
	})
}

func command(t *testing.T, c *node.Container, role string, args ...string) *exec.Cmd {
	t.Helper()
	cmd, err := workload.Command(c.Command, role, args...)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func startCmd(t *testing.T, c *exec.Cmd) {
	t.Helper()
	err := c.Start()
	node.Release(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	})
}

// line reads one line of sc, failing after 10 s.
func line(t *testing.T, sc *bufio.Scanner) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	select {
	case l, ok := <-got:
		if !ok {
			t.Fatal("no more output")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line after 10s")
	}
	return ""
}
