package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/testenv/natstest"
)

// TestOperatorEditShownAtStart: a stream edited by an operator (what
// `nats stream edit CALLS --max-age 1h` sends) is shown field by field
// when weft run starts again, and reverted to the topology; with the
// stream's onDrift: keep it is shown and kept.
func TestOperatorEditShownAtStart(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	writeTopo := func(onDrift string) string {
		f := filepath.Join(dir, "topology-"+onDrift+".yaml")
		extra := ""
		if onDrift != "" {
			extra = ", onDrift: " + onDrift
		}
		if err := os.WriteFile(f, []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: drift}
streams:
  EVENTS: {subjects: ["weft.events.>"], maxAge: 24h}
  CALLS:  {subjects: ["weft.calls.>"], maxAge: 168h`+extra+`}
stages:
  - {name: demo, kind: synthetic, deploy: inprocess, outputs: [EVENTS], config: {rate: 10}}
  - {name: correlator, kind: correlator, deploy: inprocess, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph, kind: graph, deploy: inprocess, inputs: [CALLS], config: {store: embedded}}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	run := func(topo string) *proc {
		t.Helper()
		addr := freePort(t)
		p := start(t, "run", "-f", topo, "--stage", "graph", "--nats-url", "nats://"+s.Addr,
			"--listen", addr, "--data-dir", t.TempDir())
		natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			code, _, err := httpGet("http://" + addr + "/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v; stderr:\n%s", code, err, p.stderr)
			}
			return nil
		})
		if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if err := <-p.done; err != nil {
			t.Fatalf("weft run: %v\n%s", err, p.stderr)
		}
		return p
	}
	edit := func() {
		t.Helper()
		st, err := s.JS.Stream(ctx, "CALLS")
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxAge = time.Hour
		if _, err := s.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	liveMaxAge := func() time.Duration {
		t.Helper()
		st, err := s.JS.Stream(ctx, "CALLS")
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxAge
	}
	const diff = "stream CALLS: maxAge live 1h0m0s, topology 168h0m0s"

	apply := writeTopo("")
	first := run(apply)
	if strings.Contains(first.stderr.String(), "live ") {
		t.Fatalf("first start reports drift:\n%s", first.stderr)
	}

	edit()
	p := run(apply)
	if want := diff + ": the topology's value applied"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("second start's log lacks %q:\n%s", want, p.stderr)
	}
	if want := "CALLS    updated (live differed from the topology: maxAge)"; !strings.Contains(p.stdout.String(), want) {
		t.Errorf("second start's summary lacks %q:\n%s", want, p.stdout)
	}
	if got := liveMaxAge(); got != 168*time.Hour {
		t.Errorf("max age after the second start %v, want the topology's 168h", got)
	}

	edit()
	p = run(writeTopo("keep"))
	if want := diff + ": the live value kept (onDrift: keep)"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("start with onDrift: keep lacks %q:\n%s", want, p.stderr)
	}
	if got := liveMaxAge(); got != time.Hour {
		t.Errorf("max age after a start with onDrift: keep %v, want the operator's 1h", got)
	}

	// weft streams diff shows the same, and changes nothing.
	d := start(t, "streams", "diff", "-f", apply, "--nats-url", "nats://"+s.Addr)
	if err := <-d.done; err != nil {
		t.Fatalf("weft streams diff: %v\n%s", err, d.stderr)
	}
	if got := d.stdout.String(); got != diff+"\n" {
		t.Errorf("weft streams diff printed %q, want %q", got, diff+"\n")
	}
	if got := liveMaxAge(); got != time.Hour {
		t.Errorf("max age after weft streams diff %v, want the operator's 1h", got)
	}
}
