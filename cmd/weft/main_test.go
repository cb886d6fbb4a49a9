package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/charts/render"
	"github.com/weftobs/weft/collectors/synthetic"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore/neo4jtest"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/examples/topologies"
	"github.com/weftobs/weft/streams/replay"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

var weftBin string

// TestMain builds the weft binary once, so the end-to-end tests run what
// users run, and stops the package's Neo4j (see package neo4jtest) after
// the tests.
func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// Fuzz targets call functions, not the binary; each fuzz worker
		// runs TestMain, and a build each would take most of the run.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "weft-bin-")
	if err != nil {
		panic(err)
	}
	weftBin = filepath.Join(dir, "weft")
	out, err := exec.Command("go", "build", "-o", weftBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build weft: %v\n%s", err, out)
		os.Exit(1)
	}
	code := neo4jtest.RunTests(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestOneProcessPerDataDir: a second weft up on a data dir another holds
// exits non-zero naming the holder's pid, and leaves the first running;
// once the first has stopped, the data dir is free again.
func TestOneProcessPerDataDir(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr := freePort(t)
	// No collector: this test is about the data dir, and needs no eBPF.
	topo := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(topo, []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: lock}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
  CALLS:  {subjects: ["weft.calls.>"]}
stages:
  - {name: demo, kind: synthetic, deploy: inprocess, outputs: [EVENTS], config: {rate: 100}}
  - {name: correlator, kind: correlator, deploy: inprocess, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph, kind: graph, deploy: inprocess, inputs: [CALLS], config: {store: embedded}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	first := start(t, "up", "-f", topo, "--data-dir", dataDir, "--listen", httpAddr, "--nats-listen", freePort(t), "--status-every", "0")
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		code, _, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz %d %v; stderr:\n%s", code, err, first.stderr)
		}
		return nil
	})
	second := start(t, "up", "-f", topo, "--data-dir", dataDir, "--listen", freePort(t), "--nats-listen", freePort(t), "--status-every", "0")
	// Wait for the second to end; were it let in, it would get ready
	// instead, and its readyz answer fails the test.
	secondAddr := second.cmd.Args[slices.Index(second.cmd.Args, "--listen")+1]
	var err error
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case err = <-second.done:
			return nil
		default:
		}
		if code, _, gerr := httpGet("http://" + secondAddr + "/readyz"); gerr == nil && code == 200 {
			t.Fatalf("a second weft up on the held data dir started:\n%s", second.stderr)
		}
		return errors.New("the second weft up is still running")
	})
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the second weft up: %v, want a non-zero exit\n%s", err, second.stderr)
	}
	want := fmt.Sprintf("data dir %s is in use by process %d", dataDir, first.cmd.Process.Pid)
	if !strings.Contains(second.stderr.String(), want) {
		t.Fatalf("the second weft up says:\n%s\nwant %q", second.stderr, want)
	}
	if code, _, err := httpGet("http://" + httpAddr + "/readyz"); err != nil || code != 200 {
		t.Fatalf("the first weft up after the second was refused: readyz %d %v", code, err)
	}
	if err := first.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := <-first.done; err != nil {
		t.Fatalf("the first weft up: %v\n%s", err, first.stderr)
	}
	third := start(t, "up", "-f", topo, "--data-dir", dataDir, "--listen", httpAddr, "--nats-listen", freePort(t), "--status-every", "0")
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		code, _, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz of a weft up after the first stopped: %d %v; stderr:\n%s", code, err, third.stderr)
		}
		return nil
	})
}

// fuzzing tells whether this test binary runs a fuzz target (as the
// coordinator with -test.fuzz, or as one of its workers).
func fuzzing() bool {
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return true
	}
	f := flag.Lookup("test.fuzzworker")
	return f != nil && f.Value.String() == "true"
}

func TestExampleTopologiesValidate(t *testing.T) {
	reg := registry()
	for _, name := range topologies.Names {
		t.Run(name, func(t *testing.T) {
			data, err := topologies.FS.ReadFile(name + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			topo, err := topology.Parse(name+".yaml", data, reg)
			if err != nil {
				t.Fatal(err)
			}
			if topo.Metadata.Name != name {
				t.Fatalf("metadata.name %q in %s.yaml", topo.Metadata.Name, name)
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type proc struct {
	cmd    *exec.Cmd
	stdout *outBuffer
	stderr *outBuffer
	done   chan error
}

// outBuffer keeps a child's output; the test reads it while the child
// still writes.
type outBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *outBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *outBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func (o *outBuffer) Bytes() []byte { return []byte(o.String()) }

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables. A child still
// running when the test ends is interrupted, then killed after 20 s.
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(weftBin, args...), stdout: &outBuffer{}, stderr: &outBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

// stop sends sig and wants a clean exit within a minute.
func (p *proc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("weft %s exited with %v after %v; stderr:\n%s", p.cmd.Args[1], err, sig, p.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("weft %s did not exit after %v; stderr:\n%s", p.cmd.Args[1], sig, p.stderr)
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// metricValue reads one sample from Prometheus text.
func metricValue(body, name, labels string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{[^}]*` + regexp.QuoteMeta(labels) + `[^}]*\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestUpRunsDrainsAndResumes runs `weft up` on the built-in local topology:
// it gets ready, moves events from the synthetic stage through the
// correlator into the graph (served on /api/v1/graph, with the service map
// at / whose address it prints), exits 0 on SIGINT,
// and a second run on the same data dir resumes the graph stage's durable
// consumer where the first stopped.
func TestUpRunsDrainsAndResumes(t *testing.T) {
	dataDir := t.TempDir()
	run := func() (acked float64) {
		t.Helper()
		httpAddr, natsAddr := freePort(t), freePort(t)
		p := start(t, "up", "--demo", "--data-dir", dataDir, "--listen", httpAddr, "--nats-listen", natsAddr, "--status-every", "200ms")
		natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			code, _, err := httpGet("http://" + httpAddr + "/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v; stderr:\n%s", code, err, p.stderr)
			}
			return nil
		})
		natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			_, body, err := httpGet("http://" + httpAddr + "/metrics")
			if err != nil {
				return err
			}
			in, _ := metricValue(body, "weft_stage_events_in_total", `stage="graph"`)
			out, _ := metricValue(body, "weft_stage_events_out_total", `stage="demo"`)
			if in < 100 || out < 500 {
				return fmt.Errorf("graph in %v, synthetic out %v", in, out)
			}
			acked, _ = metricValue(body, "weft_stage_acked_total", `stage="graph"`)
			if _, ok := metricValue(body, "weft_stage_pending", `stage="correlator"`); !ok {
				return fmt.Errorf("no consumer lag for the correlator in /metrics")
			}
			return nil
		})
		natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			var g struct {
				Nodes []struct{ Labels []string }
				Edges []struct{ Type string }
			}
			resp, err := http.Get("http://" + httpAddr + "/api/v1/graph")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
				return err
			}
			if len(g.Nodes) == 0 || len(g.Edges) == 0 {
				return fmt.Errorf("graph has %d nodes, %d edges", len(g.Nodes), len(g.Edges))
			}
			return nil
		})
		p.stop(t, syscall.SIGINT)
		out := p.stdout.String()
		for _, want := range []string{"data dir   " + dataDir, "nats       nats://" + natsAddr, "http       http://" + httpAddr,
			"map        open http://" + httpAddr + "/", "stopped cleanly."} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q:\n%s", want, out)
			}
		}
		return acked
	}
	run()

	acked2 := run()
	if acked2 == 0 {
		t.Fatal("second run acked nothing")
	}

	// Exactly once across the restart: the pod-level CALLS edges of the
	// graph the two runs built count every call in the CALLS stream once,
	// up to the last sequence the graph applied (what the correlator
	// published as it stopped may be past what the graph had fetched when
	// it stopped: the next start applies it).
	exp := start(t, "graph", "export", "--format", "json", "--data-dir", dataDir)
	if err := <-exp.done; err != nil {
		t.Fatalf("graph export: %v\n%s", err, exp.stderr)
	}
	var g struct {
		Edges []struct {
			From, To, Type string
			Props          map[string]any
		}
	}
	if err := json.Unmarshal(exp.stdout.Bytes(), &g); err != nil {
		t.Fatal(err)
	}
	var edgeCalls float64
	for _, e := range g.Edges {
		if e.Type == "CALLS" && strings.HasPrefix(e.From, "Pod:"+synthetic.PodUIDPrefix) {
			edgeCalls += e.Props["count"].(float64)
		}
	}
	mem, err := memstore.Load(filepath.Join(dataDir, "stages", "graph"))
	if err != nil {
		t.Fatal(err)
	}
	// A named query from the data dir is the embedded answer.
	q := start(t, "graph", "query", "top-talkers", "3", "--json", "--data-dir", dataDir)
	if err := <-q.done; err != nil {
		t.Fatalf("graph query: %v\n%s", err, q.stderr)
	}
	memGraph, err := mem.Graph(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(query.Find("top-talkers").Embedded(memGraph, int64(3)))
	if got := strings.TrimSpace(q.stdout.String()); got != string(want) || !strings.Contains(got, `"rows":[[`) {
		t.Errorf("weft graph query top-talkers 3 --json: %s, want %s", got, want)
	}
	applied, err := mem.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.StartIn(t, dataDir, "127.0.0.1:-1")
	var streamCalls, pending int
	if _, err := replay.Read(context.Background(), s.JS, "CALLS", replay.Range{}, func(m jetstream.Msg) error {
		if meta, err := m.Metadata(); err != nil {
			return err
		} else if meta.Sequence.Stream > applied {
			pending++
			return nil
		}
		b, err := schema.DecodeCallBatch(m.Data())
		for _, c := range b.GetCalls() {
			// Calls from the demo's pods, as the edges counted above (as
			// root the collector adds what this machine runs: host
			// processes, and the pods of a Kubernetes cluster a test
			// runs at the same time).
			if strings.HasPrefix(c.GetClient().GetPod().GetUid(), synthetic.PodUIDPrefix) {
				// A connection seen open is a call from its OPEN on
				// (its PROGRESS and CLOSE add bytes, no count).
				n, _, _ := schema.Counts(c)
				streamCalls += int(n)
			}
		}
		return err
	}, nil); err != nil {
		t.Fatal(err)
	}
	if streamCalls == 0 || edgeCalls != float64(streamCalls) {
		t.Fatalf("graph counts %v calls on pod edges, CALLS holds %d up to sequence %d, which the graph applied: lost or counted twice across the restart", edgeCalls, streamCalls, applied)
	}
	t.Logf("CALLS: %d messages past sequence %d, the graph's last, when it stopped", pending, applied)

	// Rebuilt by replay: CALLS from its first sequence to the last the
	// live graph applied, into an empty store, gives the graph the two
	// live runs built, to the byte. (What the correlator published as it
	// stopped — the demo's connections still open — may be past that.)
	rebuilt := t.TempDir()
	rp := start(t, "replay", "--stream", "CALLS", "--start-seq", "1", "--until", fmt.Sprint(applied), "--to", "graph", "--data-dir", rebuilt, "--nats-url", s.URL(), "--no-progress")
	if err := <-rp.done; err != nil {
		t.Fatalf("replay --to graph: %v\n%s", err, rp.stderr)
	}
	exp2 := start(t, "graph", "export", "--format", "json", "--data-dir", rebuilt)
	if err := <-exp2.done; err != nil {
		t.Fatalf("graph export of the rebuilt store: %v\n%s", err, exp2.stderr)
	}
	if live, again := exp.stdout.String(), exp2.stdout.String(); live != again {
		t.Fatalf("the replayed graph differs from the live one:\nlive    %d bytes\nreplay  %d bytes\nreplay stderr:\n%s", len(live), len(again), rp.stderr)
	}
}

// TestNATSUnreachable: a clear error naming the URL, within seconds, and a
// non-zero exit.
func TestNATSUnreachable(t *testing.T) {
	// A stage whose NATS does not answer waits for it (a fresh install
	// starts every pod at once: TestRunWaitsForNATS), saying in its log
	// where it waits; a stop while it waits ends it at once, with an
	// error naming the URL.
	url := "nats://" + freePort(t)
	p := start(t, "run", "-f", "../../examples/topologies/local.yaml", "--stage", "correlator", "--nats-url", url, "--listen", freePort(t), "--data-dir", t.TempDir())
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			t.Fatalf("weft run exited while waiting for NATS: %v\n%s", err, p.stderr)
		default:
		}
		if !strings.Contains(p.stderr.String(), "waiting for NATS") || !strings.Contains(p.stderr.String(), url) {
			return fmt.Errorf("stderr does not say it waits for %s yet", url)
		}
		return nil
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err == nil {
			t.Fatal("exit 0 when stopped before NATS answered")
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("weft run did not stop on SIGTERM while waiting for NATS:\n%s", p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "gave up waiting for NATS") || !strings.Contains(p.stderr.String(), url) {
		t.Fatalf("stderr does not say it gave up waiting for %s:\n%s", url, p.stderr)
	}
}

func TestTopologyValidateReportsEveryError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: bad}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
stages:
  - {name: col, kind: collector, deploy: deployment, outputs: [EVENTS]}
  - {name: x, kind: exporter, inputs: [EVENTS]}
  - {name: s, kind: sink, inputs: [CALLS], color: blue}
`), 0o644)
	p := start(t, "topology", "validate", "-f", bad)
	if err := <-p.done; err == nil {
		t.Fatal("exit 0 for a bad topology")
	}
	for _, want := range []string{
		bad + `:7: stage "col": kind "collector" cannot be deployed as "deployment"`,
		bad + `:8: stage "x": unknown kind "exporter"`,
		bad + `:9: stage "s": unknown key "color"`,
		bad + `:9: stage "s": input "CALLS" is not a declared stream`,
	} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, p.stderr)
		}
	}
	p = start(t, "topology", "validate", "-f", "../../examples/topologies/hybrid.yaml")
	if err := <-p.done; err != nil {
		t.Fatalf("hybrid: %v\n%s", err, p.stderr)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"run"},
		{"up", "--no-such-flag"},
		{"replay", "--stream", "CALLS"},
		{"run", "-f", "../../examples/topologies/local.yaml", "--stage", "nope"},
		{"topology", "show", "--format", "svg", "-f", "../../examples/topologies/local.yaml"},
	} {
		p := start(t, args...)
		err := <-p.done
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("weft %v: %v, want exit 2; stderr %s", args, err, p.stderr)
		}
	}
}

// TestReplayOut dumps a stream with an undecodable message in it: every
// event is a line carrying its message's sequence and its index in the
// batch, the bad message is one line with its error, and no progress bar
// is drawn into a stderr that is not a terminal.
func TestReplayOut(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	s.PublishTCPEvents(t, "n1", 25, 10)
	out := filepath.Join(t.TempDir(), "events.ndjson")
	rp := start(t, "replay", "--stream", "EVENTS", "--start-seq", "2", "--out", out, "--nats-url", s.URL())
	if err := <-rp.done; err != nil {
		t.Fatalf("replay: %v\n%s", err, rp.stderr)
	}
	lines := readNDJSON(t, out)
	// Batches 2 (10 events) and 3 (5 events), then the garbage.
	var got []string
	for _, l := range lines {
		switch {
		case l["error"] != nil:
			got = append(got, fmt.Sprintf("%v:error", l["seq"]))
		case l["event"] != nil:
			got = append(got, fmt.Sprintf("%v:%v", l["seq"], l["index"]))
		default:
			t.Fatalf("line with neither event nor error: %v", l)
		}
	}
	want := "2:0 2:1 2:2 2:3 2:4 2:5 2:6 2:7 2:8 2:9 3:0 3:1 3:2 3:3 3:4 4:error"
	if strings.Join(got, " ") != want {
		t.Fatalf("lines (seq:index):\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if lines[0]["subject"] != "weft.events.n1.tcp" || lines[0]["time"] == nil {
		t.Fatalf("first line: %v", lines[0])
	}
	if !strings.Contains(rp.stderr.String(), "replayed 3 messages of EVENTS (sequences 2…4): 16 lines; 1 undecodable") {
		t.Fatalf("summary: %s", rp.stderr)
	}
	if strings.Contains(rp.stderr.String(), "replay EVENTS") || strings.Contains(rp.stderr.String(), "%|") {
		t.Fatalf("progress bar drawn into a non-terminal stderr:\n%s", rp.stderr)
	}
}

func readNDJSON(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestReplayOutNothingToWrite: a stream that does not exist, or a start
// past the stream's end, is an error that says so, and no file is written.
func TestReplayOutNothingToWrite(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "CALLS", "weft.calls.>")
	s.CreateStream(t, "EVENTS", "weft.events.>")
	ctx := context.Background()
	for range 3 {
		m := nats.NewMsg("weft.calls.n1")
		m.Data = []byte("x")
		if _, err := s.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	info := start(t, "streams", "info", "NOPE", "--nats-url", s.URL())
	if err := <-info.done; err == nil {
		t.Fatal("streams info NOPE: exit 0")
	}
	notFound := strings.TrimSpace(info.stderr.String())
	if !strings.Contains(notFound, "stream NOPE: not found") {
		t.Fatalf("streams info NOPE: %s", notFound)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no such stream", []string{"--stream", "NOPE"}, notFound},
		{"start seq past the end", []string{"--stream", "CALLS", "--start-seq", "4"}, "nothing to replay: start sequence 4 is past the end of stream CALLS (sequences 1…3)"},
		{"start time after the newest", []string{"--stream", "CALLS", "--start-time", future}, "nothing to replay: start time " + future + " is after the newest message of stream CALLS"},
		{"since newer than the newest", []string{"--stream", "CALLS", "--since", "1ns"}, "is after the newest message of stream CALLS"},
		{"empty stream", []string{"--stream", "EVENTS"}, "nothing to replay: stream EVENTS has no messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.ndjson")
			args := append([]string{"replay", "--out", out, "--nats-url", s.URL()}, tc.args...)
			p := start(t, args...)
			if err := <-p.done; err == nil {
				t.Fatalf("exit 0; stderr %s", p.stderr)
			}
			if !strings.Contains(p.stderr.String(), tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, p.stderr)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("files left in the output dir: %v", ents)
			}
		})
	}
}

// TestChartKnowsEveryKind: the chart's table of kinds and deploy modes is
// the binary's, so a topology the binary accepts the chart accepts.
func TestChartKnowsEveryKind(t *testing.T) {
	chartKinds, err := render.Kinds()
	if err != nil {
		t.Fatal(err)
	}
	reg := registry()
	for _, name := range reg.Names() {
		k, _ := reg.Lookup(name)
		var modes []string
		for _, d := range k.Deploy {
			modes = append(modes, string(d))
		}
		if got := strings.Join(chartKinds[name], ","); got != strings.Join(modes, ",") {
			t.Errorf("kind %s: chart deploys %q, binary %q", name, got, strings.Join(modes, ","))
		}
	}
	for name := range chartKinds {
		if _, ok := reg.Lookup(name); !ok {
			t.Errorf("chart knows kind %s, the binary does not", name)
		}
	}
}

// TestTopologyValues: the values the binary prints make Helm render what
// the topology file and the user's values render, sidecar snippet included.
func TestTopologyValues(t *testing.T) {
	const topoFile = "../../examples/topologies/sidecar.yaml"
	userValues := []byte("# the user's comment\notlp: {endpoint: \"http://otel-collector.observability:4318\"}\ntopology: {stages: []}\n")
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, userValues, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "topology", "values", "-f", topoFile, "--values", valuesFile)
	if err := <-p.done; err != nil {
		t.Fatalf("%v\n%s", err, p.stderr)
	}
	if !strings.Contains(p.stdout.String(), "# the user's comment") {
		t.Errorf("the user's comment is gone:\n%s", p.stdout)
	}
	printed, err := render.ParseValues(p.stdout.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	topo, err := os.ReadFile(topoFile)
	if err != nil {
		t.Fatal(err)
	}
	given, err := render.ParseValues(userValues)
	if err != nil {
		t.Fatal(err)
	}
	want, err := render.Render(topo, render.Options{Values: given})
	if err != nil {
		t.Fatal(err)
	}
	got, err := render.Render(nil, render.Options{Values: printed})
	if err != nil {
		t.Fatal(err)
	}
	if render.WithoutGenerated(got) != render.WithoutGenerated(want) {
		t.Errorf("the printed values render differently from the topology file:\n%s", got)
	}
	snippet, err := render.RenderSidecar(nil, "collector", render.Options{Values: printed})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"weft", "run", "--stage", "collector"} {
		if !strings.Contains(snippet, want) {
			t.Errorf("sidecar snippet lacks %q:\n%s", want, snippet)
		}
	}

	bad := start(t, "topology", "values", "-f", "testdata/no-such-topology.yaml")
	if err := <-bad.done; err == nil || !strings.Contains(bad.stderr.String(), "no-such-topology.yaml") {
		t.Errorf("a missing topology file: %v\n%s", err, bad.stderr)
	}
}
