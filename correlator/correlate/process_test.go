package correlate_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// The weft binary, built once for the tests that run correlators as
// separate `weft run --stage correlator` processes.
var (
	weftOnce sync.Once
	weftBin  string
	weftErr  error
)

// removeWeftBinary removes the built binary, if any (from TestMain).
func removeWeftBinary() {
	if weftBin != "" {
		_ = os.RemoveAll(filepath.Dir(weftBin))
	}
}

func weftBinary(t testing.TB) string {
	t.Helper()
	weftOnce.Do(func() {
		dir, err := os.MkdirTemp("", "weft-correlate-")
		if err != nil {
			weftErr = err
			return
		}
		weftBin = filepath.Join(dir, "weft")
		out, err := exec.Command("go", "build", "-o", weftBin, "../../cmd/weft").CombinedOutput()
		if err != nil {
			weftErr = fmt.Errorf("build weft: %v\n%s", err, out)
		}
	})
	if weftErr != nil {
		t.Fatal(weftErr)
	}
	return weftBin
}

// processTopology has EVENTS in parts partitions and a correlator with
// short windows and a 1s lease.
func processTopology(t testing.TB, parts int) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "topology.yaml")
	y := fmt.Sprintf(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: scaleout}
streams:
  EVENTS: {subjects: ["weft.events.>"], partitions: %d}
  CALLS:  {subjects: ["weft.calls.>"]}
  DLQ:    {subjects: ["weft.dlq.>"]}
stages:
  - {name: collector, kind: collector, deploy: daemonset, outputs: [EVENTS]}
  - name: correlator
    kind: correlator
    deploy: deployment
    replicas: 3
    inputs: [EVENTS]
    outputs: [CALLS]
    config: {window: 200ms, closeWait: 300ms, flushInterval: 20ms, ackWait: 6s, lease: 3s}
`, parts)
	if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// corrProc is one `weft run --stage correlator` process.
type corrProc struct {
	node string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan error
}

func (p *corrProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

func (p *corrProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

var assignedRe = regexp.MustCompile(`msg="partitions assigned".*? owned="?\[([0-9 ]*)\]"? members="?\[([^\]]*)\]`)

// owned is the last assignment the process logged: its partitions and
// how many members it saw.
func (p *corrProc) owned() (parts []int, members int, ok bool) {
	m := assignedRe.FindAllStringSubmatch(p.logs(), -1)
	if len(m) == 0 {
		return nil, 0, false
	}
	last := m[len(m)-1]
	for _, f := range strings.Fields(last[1]) {
		n, _ := strconv.Atoi(f)
		parts = append(parts, n)
	}
	return parts, len(strings.Fields(last[2])), true
}

func startCorrelator(t testing.TB, url, topo, node string) *corrProc {
	t.Helper()
	p := &corrProc{node: node, done: make(chan error, 1)}
	p.cmd = exec.Command(weftBinary(t), "run", "-f", topo, "--stage", "correlator", "--nats-url", url,
		"--node", node, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s:\n%s", node, p.logs())
		}
	})
	return p
}

// procsBalanced waits until every process logged an assignment that sees
// all of them, the assignments disjoint and covering every partition.
func procsBalanced(t testing.TB, ps []*corrProc, parts int) {
	t.Helper()
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var all []int
		for _, p := range ps {
			o, members, ok := p.owned()
			if !ok || members != len(ps) {
				return fmt.Errorf("%s: owns %v among %d members", p.node, o, members)
			}
			all = append(all, o...)
		}
		slices.Sort(all)
		if len(all) != parts || (len(all) > 0 && all[len(all)-1] != parts-1) || len(slices.Compact(slices.Clone(all))) != parts {
			return fmt.Errorf("partitions owned %v", all)
		}
		return nil
	})
}

// callsFrom are the CALLS messages (stream time, calls) each process
// published, by its node name (the batches' origin).
func callsByOrigin(t testing.TB, js jetstream.JetStream) map[string][]time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, schema.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]time.Time{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := schema.DecodeCallBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[b.GetOrigin().GetNode()] = append(out[b.GetOrigin().GetNode()], m.Time)
	}
	return out
}

// TestProcessReplicasGroundTruth: 1, 2 and 3 `weft run --stage
// correlator` processes over 6 partitions give the same calls, equal to
// the ground truth, none twice.
func TestProcessReplicasGroundTruth(t *testing.T) {
	const parts = 6
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 200, 3e6)
	batches := sim.Interleaved(16)
	var first []string
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("processes=%d", n), func(t *testing.T) {
			s := natstest.Start(t)
			topo := processTopology(t, parts)
			var ps []*corrProc
			for i := range n {
				ps = append(ps, startCorrelator(t, s.URL(), topo, fmt.Sprintf("corr-%d", i)))
			}
			procsBalanced(t, ps, parts)
			stagetest.PublishPartitioned(t, s.JS, batches, parts)
			natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
				return scenario.Compare(sim.Truth, scenario.Fold(stagetest.ReadCalls(t, s.JS)))
			})
			calls := stagetest.ReadCalls(t, s.JS)
			if _, dups := stagetest.Dedupe(calls); dups > 0 {
				t.Errorf("%d calls emitted twice", dups)
			}
			by := callsByOrigin(t, s.JS)
			for _, p := range ps {
				if len(by[p.node]) == 0 {
					t.Errorf("%s published no calls", p.node)
				}
			}
			ids := callIDs(calls)
			if first == nil {
				first = ids
			} else if !slices.Equal(ids, first) {
				t.Errorf("%d processes: %d calls, not the %d of one", n, len(ids), len(first))
			}
		})
	}
}

// TestProcessKilled: of three correlator processes, one gets SIGKILL
// mid-stream; the other two take its partitions and the calls equal the
// ground truth once ids are deduplicated (as the graph stage does).
func TestProcessKilled(t *testing.T) {
	const parts = 6
	s := natstest.Start(t)
	topo := processTopology(t, parts)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 300, 3e6)
	batches := sim.Interleaved(8)
	half := len(batches) / 2
	var ps []*corrProc
	for i := range 3 {
		ps = append(ps, startCorrelator(t, s.URL(), topo, fmt.Sprintf("corr-%d", i)))
	}
	procsBalanced(t, ps, parts)
	stagetest.PublishPartitioned(t, s.JS, batches[:half], parts)
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := len(callsByOrigin(t, s.JS)["corr-1"]); n == 0 {
			return fmt.Errorf("corr-1 published nothing yet")
		}
		return nil
	})
	killed := time.Now()
	if err := ps[1].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	procsBalanced(t, []*corrProc{ps[0], ps[2]}, parts)
	t.Logf("partitions of the killed process assigned again in %v", time.Since(killed))
	stagetest.PublishPartitioned(t, s.JS, batches[half:], parts)
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	_, dups := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
	t.Logf("calls emitted again after the kill (dropped by id downstream): %d", dups)
}

// TestProcessPausedPastLease: a correlator paused (SIGSTOP) while it holds
// half-joined connections loses its lease; the other takes its partitions
// and finishes them. Resumed (SIGCONT), the paused one must not publish
// what it held — its lone halves, expired, would be partial calls — so
// the calls stay equal to the ground truth, none twice, and it publishes
// nothing between resuming and releasing its partitions.
func TestProcessPausedPastLease(t *testing.T) {
	const parts = 2
	s := natstest.Start(t)
	topo := processTopology(t, parts)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 200, 3e6)
	batches := sim.Interleaved(8)
	half := len(batches) / 2
	a := startCorrelator(t, s.URL(), topo, "corr-a")
	b := startCorrelator(t, s.URL(), topo, "corr-b")
	ps := []*corrProc{a, b}
	procsBalanced(t, ps, parts)
	stagetest.PublishPartitioned(t, s.JS, batches[:half], parts)
	natstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := len(callsByOrigin(t, s.JS)["corr-a"]); n == 0 {
			return fmt.Errorf("corr-a published nothing yet")
		}
		return nil
	})
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	procsBalanced(t, []*corrProc{b}, parts)
	t.Logf("corr-b took every partition %v after corr-a was paused", time.Since(stopped))
	stagetest.PublishPartitioned(t, s.JS, batches[half:], parts)
	defer func() {
		if t.Failed() {
			dumpConsumers(t, s.JS)
		}
	}()
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	resumed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(a.logs(), "lease lost") {
			return fmt.Errorf("corr-a has not said it lost its lease")
		}
		return nil
	})
	procsBalanced(t, ps, parts) // it rejoined afterwards
	released := time.Now()
	for _, at := range callsByOrigin(t, s.JS)["corr-a"] {
		if at.After(resumed) && at.Before(released) {
			t.Errorf("corr-a published calls at %v, after it resumed (%v) with a lease run out", at, resumed)
		}
	}
	// A call corr-a published but had not acked when it was paused is
	// emitted again, with its id, by corr-b, which the pause handed the
	// message to (downstream drops it by id). A second copy from corr-a
	// would be what it held while paused: never.
	calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
	if err := scenario.Compare(sim.Truth, scenario.Fold(calls)); err != nil {
		t.Errorf("after corr-a resumed: %v", err)
	}
	again := dupsByOrigin(t, s.JS)
	if again["corr-a"] > 0 {
		t.Errorf("corr-a emitted %d calls a second time (by origin: %v)", again["corr-a"], again)
	}
	t.Logf("calls emitted again by origin (dropped by id downstream): %v", again)
}

// dupsByOrigin counts, per origin, the calls on CALLS that an earlier
// message already held (by the graph's rule, stagetest.Dedupe's).
func dupsByOrigin(t testing.TB, js jetstream.JetStream) map[string]int {
	t.Helper()
	seen := graph.NewSeen(1 << 16)
	out := map[string]int{}
	for _, b := range stagetest.ReadCallBatches(t, js) {
		for _, c := range b.GetCalls() {
			if !seen.AddCall(c) {
				out[b.GetOrigin().GetNode()]++
			}
		}
	}
	return out
}

func dumpConsumers(t testing.TB, js jetstream.JetStream) {
	ctx := context.Background()
	st, err := js.Stream(ctx, schema.StreamEvents)
	if err != nil {
		t.Log(err)
		return
	}
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		t.Logf("consumer %s: pending %d ack pending %d redelivered %d delivered %+v ackfloor %+v groups %+v", ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Delivered, ci.AckFloor, ci.PriorityGroups)
	}
}
