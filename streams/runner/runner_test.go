package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/runner"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

// recorder is a stage kind that records its lifecycle calls; a test kind,
// not a stand-in for a real one: the runner is what is under test.
type recorder struct {
	mu      *sync.Mutex
	log     *[]string
	name    string
	failing bool
	s       stage.Settings
}

func (r *recorder) Start(_ context.Context, h stage.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.log = append(*r.log, "start "+r.name)
	if r.failing {
		return errors.New("cannot start")
	}
	r.s.Counters.EventsIn.Add(5)
	return nil
}

// Gaps makes the recorder a stage.GapReporter: three for its source.
func (r *recorder) Gaps() map[string]uint64 {
	if r.name != "source" {
		return nil
	}
	return map[string]uint64{"process_gone": 3}
}

// Degraded makes the recorder a stage.Degrader: its source lacks a part.
func (r *recorder) Degraded() []string {
	if r.name != "source" {
		return nil
	}
	return []string{"probe unix: this kernel has no tracepoint sk_data_ready"}
}

// unready is what the sink's Ready says; "" when it is ready.
var unready struct {
	sync.Mutex
	reason string
}

// Ready makes the recorder a stage.Readier: its sink says unready.reason.
func (r *recorder) Ready() error {
	unready.Lock()
	defer unready.Unlock()
	if r.name != "sink" || unready.reason == "" {
		return nil
	}
	return errors.New(unready.reason)
}

func (r *recorder) Shutdown(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.log = append(*r.log, "stop "+r.name)
	return nil
}

func kinds(mu *sync.Mutex, log *[]string, failing string) *stage.Registry {
	mk := func(name string, source, sink bool) stage.Kind {
		return stage.Kind{Name: name, Deploy: []stage.DeployMode{stage.DeployInProcess}, Source: source, Sink: sink,
			New: func(s stage.Settings) (stage.Stage, error) {
				return &recorder{mu: mu, log: log, name: s.Name, failing: s.Name == failing, s: s}, nil
			}}
	}
	return stage.NewRegistry(mk("src", true, false), mk("mid", false, false), mk("snk", false, true))
}

const topo = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
  CALLS: {subjects: ["weft.calls.>"]}
stages:
  - {name: sink, kind: snk, inputs: [CALLS]}
  - {name: source, kind: src, outputs: [EVENTS]}
  - {name: middle, kind: mid, inputs: [EVENTS], outputs: [CALLS]}
`

func TestStartSinksFirstStopSourcesFirst(t *testing.T) {
	s := natstest.Start(t)
	var mu sync.Mutex
	var log []string
	reg := kinds(&mu, &log, "")
	tp, err := topology.Parse("t.yaml", []byte(topo), reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provision.EnsureStreams(context.Background(), s.JS, tp, provision.Options{}); err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before start: %d", code)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready, degraded:\n  source: probe unix: this kernel has no tracepoint sk_data_ready\n",
		"/metrics": `weft_stage_events_in_total{kind="mid",stage="middle"} 5`,
	} {
		code, body := get(t, srv.URL+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.2000s", path, code, want, body)
		}
	}
	_, body := get(t, srv.URL+"/metrics")
	for _, want := range []string{`weft_stream_messages{stream="EVENTS"}`, `weft_stage_lost_total{kind="mid",stage="middle"} 0`, `weft_stage_untracked_total{kind="mid",stage="middle"} 0`,
		`weft_stage_gaps_total{kind="src",reason="process_gone",stage="source"} 3`,
		`weft_stage_degraded{kind="src",stage="source",what="probe unix"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%.3000s", want, body)
		}
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	want := "start sink,start middle,start source,stop source,stop middle,stop sink"
	if got := strings.Join(log, ","); got != want {
		t.Fatalf("lifecycle\n got %s\nwant %s", got, want)
	}
}

// TestReadyzSaysWhyAStageIsNotReady: a started stage that says it cannot
// do its job (stage.Readier) makes /readyz answer 503 with its reason, and
// ready again once it can.
func TestReadyzSaysWhyAStageIsNotReady(t *testing.T) {
	s := natstest.Start(t)
	var mu sync.Mutex
	var log []string
	reg := kinds(&mu, &log, "")
	tp, err := topology.Parse("t.yaml", []byte(topo), reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provision.EnsureStreams(context.Background(), s.JS, tp, provision.Options{}); err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown(context.Background())
	set := func(reason string) {
		unready.Lock()
		unready.reason = reason
		unready.Unlock()
	}
	defer set("")
	set("neo4j bolt://127.0.0.1:1: cannot connect: connection refused")
	want := "not ready: stage sink: neo4j bolt://127.0.0.1:1: cannot connect: connection refused\n"
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable || body != want {
		t.Fatalf("readyz while the sink is not ready: %d %q, want 503 %q", code, body, want)
	}
	set("")
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "ready") {
		t.Fatalf("readyz once the sink is ready: %d %q", code, body)
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	s := natstest.Start(t)
	var mu sync.Mutex
	var log []string
	reg := kinds(&mu, &log, "middle")
	tp, err := topology.Parse("t.yaml", []byte(topo), reg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "start stage middle (mid): cannot start") {
		t.Fatalf("start error %v", err)
	}
	if got, want := strings.Join(log, ","), "start sink,start middle,stop sink"; got != want {
		t.Fatalf("lifecycle\n got %s\nwant %s", got, want)
	}
}

func TestSelectStages(t *testing.T) {
	s := natstest.Start(t)
	var mu sync.Mutex
	var log []string
	reg := kinds(&mu, &log, "")
	tp, _ := topology.Parse("t.yaml", []byte(topo), reg)
	if _, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS, Stages: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `no stage "nope"`) {
		t.Fatalf("unknown stage: %v", err)
	}
	r, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS, Stages: []string{"middle"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = r.Shutdown(context.Background())
	if got := strings.Join(log, ","); got != "start middle,stop middle" {
		t.Fatalf("ran %s", got)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNodeLocal: a stage that runs once per node (a sidecar of a
// DaemonSet stage, or a DaemonSet) is node-local when its process runs
// some stages of the topology (a cluster's workload), never when it runs
// them all (weft up, one process for every node).
func TestNodeLocal(t *testing.T) {
	s := natstest.Start(t)
	var mu sync.Mutex
	var log []string
	got := map[string]bool{}
	mk := func(name string, source bool) stage.Kind {
		return stage.Kind{Name: name, Source: source, Sink: !source,
			Deploy: []stage.DeployMode{stage.DeployInProcess, stage.DeployDaemonSet, stage.DeploySidecar, stage.DeployDeployment},
			New: func(st stage.Settings) (stage.Stage, error) {
				got[st.Name] = st.NodeLocal
				return &recorder{mu: &mu, log: &log, name: st.Name, s: st}, nil
			}}
	}
	reg := stage.NewRegistry(mk("src", true), mk("snk", false))
	const doc = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
stages:
  - {name: collector, kind: src, deploy: daemonset, outputs: [EVENTS]}
  - {name: node-otlp, kind: snk, deploy: sidecar, sidecarOf: collector, inputs: [EVENTS]}
  - {name: otlp, kind: snk, deploy: deployment, inputs: [EVENTS]}
`
	tp, err := topology.Parse("t.yaml", []byte(doc), reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stages []string
		want   map[string]bool
	}{
		{nil, map[string]bool{"collector": false, "node-otlp": false, "otlp": false}},
		{[]string{"collector", "node-otlp"}, map[string]bool{"collector": true, "node-otlp": true}},
		{[]string{"otlp"}, map[string]bool{"otlp": false}},
	} {
		clear(got)
		if _, err := runner.New(runner.Options{Topology: tp, Registry: reg, JS: s.JS, Node: "n1", Stages: tc.stages}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("stages %v: node-local %v, want %v", tc.stages, got, tc.want)
		}
	}
}
