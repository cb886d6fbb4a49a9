package topology_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

var update = flag.Bool("update", false, "rewrite golden files")

type kindCfg struct {
	Rate int `yaml:"rate"`
}

func (c *kindCfg) Validate() error {
	if c.Rate < 0 {
		return errNeg
	}
	return nil
}

type negErr struct{}

func (negErr) Error() string { return "rate must be >= 0" }

var errNeg = negErr{}

// testKinds mirror the real kinds' shapes (cmd/weft validates the example
// topologies against the real registry).
func testKinds() *stage.Registry {
	src := stage.Kind{Name: "gen", Deploy: []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment}, Source: true,
		NewConfig: func() any { return &kindCfg{} }, New: func(stage.Settings) (stage.Stage, error) { return nil, nil }}
	return stage.NewRegistry(
		src,
		stage.NotImplemented("collector", "c", []stage.DeployMode{stage.DeployDaemonSet, stage.DeployInProcess, stage.DeploySidecar}, true, false),
		stage.NotImplemented("correlator", "c", []stage.DeployMode{stage.DeployDeployment, stage.DeployInProcess, stage.DeployStatefulSet}, false, false),
		stage.NotImplemented("graph", "g", []stage.DeployMode{stage.DeployDeployment, stage.DeployInProcess, stage.DeployStatefulSet}, false, true),
		stage.NotImplemented("otlp", "o", []stage.DeployMode{stage.DeployDeployment, stage.DeployInProcess, stage.DeploySidecar, stage.DeployDaemonSet}, false, true),
		stage.NotImplemented("sink", "s", []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment}, false, true),
	)
}

const good = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"], maxAge: 24h, maxBytes: 1GiB, replicas: 3}
  CALLS:  {subjects: ["weft.calls.>"], maxAge: 7d}
stages:
  - {name: collector,  kind: collector,  deploy: daemonset,  outputs: [EVENTS]}
  - {name: correlator, kind: correlator, deploy: deployment, replicas: 2, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph,      kind: graph,      inputs: [CALLS]}
  - {name: otlp,       kind: otlp,       deploy: deployment, inputs: [CALLS], autoscale: {min: 1, max: 5}}
  - {name: node-otlp,  kind: otlp,       deploy: sidecar, sidecarOf: collector, inputs: [EVENTS]}
`

func TestParseGood(t *testing.T) {
	topo, err := topology.Parse("good.yaml", []byte(good), testKinds())
	if err != nil {
		t.Fatal(err)
	}
	if got := topo.Stage("graph").Deploy; got != stage.DeployDeployment {
		t.Errorf("graph's default deploy %q, want the kind's first, deployment", got)
	}
	if topo.Stream("DLQ") == nil || !topo.Stream("DLQ").Implicit {
		t.Error("DLQ stream not added implicitly")
	}
	if got := int64(topo.Stream("EVENTS").MaxBytes); got != 1<<30 {
		t.Errorf("maxBytes %d", got)
	}
	var order []string
	for _, s := range topo.Order() {
		order = append(order, s.Name)
	}
	if strings.Join(order, ",") != "collector,correlator,node-otlp,graph,otlp" {
		t.Errorf("order %v: sources first", order)
	}
}

// TestParseErrors: each problem is reported with file:line and its stage or
// stream.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"unknown top key", "apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstages: []\nstaegs: []\n",
			[]string{`bad.yaml:5: unknown key "staegs" (did you mean "stages"?)`, "bad.yaml:1: no stages"}},
		{"unknown stage key", header + "  - {name: a, kind: gen, outputs: [EVENTS], replica: 2}\n",
			[]string{`bad.yaml:7: stage "a": unknown key "replica" (did you mean "replicas"?)`}},
		{"unknown stream key", "apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"], maxage: 1h}\nstages:\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:5: stream "EVENTS": unknown key "maxage" (did you mean "maxAge"?)`}},
		{"unknown kind", header + "  - {name: a, kind: colector, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:7: stage "a": unknown kind "colector" (did you mean "collector"?)`}},
		{"input nobody produces", strings.Replace(header, "streams:\n", "streams:\n  CALLS: {subjects: [\"weft.calls.>\"]}\n", 1) + "  - {name: a, kind: gen, outputs: [EVENTS]}\n  - {name: b, kind: sink, inputs: [CALLS]}\n",
			[]string{`bad.yaml:9: stage "b": input "CALLS": no stage produces it`}},
		{"undeclared stream", header + "  - {name: a, kind: gen, outputs: [EVNTS]}\n",
			[]string{`bad.yaml:7: stage "a": output "EVNTS" is not a declared stream`}},
		{"overlapping subjects", "apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"]}\n  TCP: {subjects: [\"weft.*.n1.tcp\"]}\nstages:\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:6: stream "TCP": subject "weft.*.n1.tcp" overlaps "weft.events.>" of stream "EVENTS" (line 5)`}},
		{"cycle", header + "  - {name: a, kind: gen, outputs: [EVENTS]}\n  - {name: b, kind: correlator, inputs: [EVENTS, CALLS], outputs: [CALLS2]}\n  - {name: c, kind: correlator, inputs: [CALLS2], outputs: [CALLS]}\n",
			[]string{`stage "b": cycle: b → c → b`}},
		{"collector as deployment", header + "  - {name: col, kind: collector, deploy: deployment, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:7: stage "col": kind "collector" cannot be deployed as "deployment" (it can: [daemonset inprocess sidecar])`}},
		{"sidecarOf nothing", header + "  - {name: a, kind: gen, outputs: [EVENTS]}\n  - {name: o, kind: otlp, deploy: sidecar, sidecarOf: colector, inputs: [EVENTS]}\n",
			[]string{`bad.yaml:8: stage "o": sidecarOf "colector" names no stage`}},
		{"empty stage item", header + "  -\n",
			[]string{`bad.yaml:7: stages[0]: an empty item`}},
		{"null stage item", header + "  - null\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:7: stages[0]: an empty item`}},
		{"sidecar without sidecarOf", header + "  - {name: a, kind: gen, outputs: [EVENTS]}\n  - {name: o, kind: otlp, deploy: sidecar, inputs: [EVENTS]}\n",
			[]string{`bad.yaml:8: stage "o": a sidecar stage needs sidecarOf`}},
		{"bad config", header + "  - {name: a, kind: gen, outputs: [EVENTS], config: {rate: -1, burst: 3}}\n",
			[]string{`bad.yaml:7: stage "a": unknown key "burst"`, `bad.yaml:7: stage "a": config: rate must be >= 0`}},
		{"wrong type", header + "  - {name: a, kind: gen, outputs: [EVENTS], replicas: lots}\n",
			[]string{"bad.yaml:7", "cannot unmarshal !!str `lots` into int"}},
		{"bad duration", "apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"], maxAge: forever}\nstages:\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:5: stream "EVENTS": duration "forever"`}},
		{"bad compression and onDrift", "apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"], compression: zstd, onDrift: ignore}\nstages:\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:5: stream "EVENTS": compression "zstd": want "s2" or "none"`, `bad.yaml:5: stream "EVENTS": onDrift "ignore": want "apply" (the topology wins) or "keep" (live edits stay)`}},
		{"duplicate stage", header + "  - {name: a, kind: gen, outputs: [EVENTS]}\n  - {name: a, kind: gen, outputs: [EVENTS]}\n",
			[]string{`bad.yaml:8: stage "a": stage name used twice (first at line 7)`}},
		{"yaml syntax", "apiVersion: weft.dev/v1\nstages: [\n", []string{"bad.yaml:2: did not find expected node content"}},
		{"bad header", "apiVersion: v2\nkind: Topo\nmetadata: {name: Bad_Name}\nstreams: {}\nstages: []\n",
			[]string{`apiVersion "v2"`, `kind "Topo"`, `metadata.name "Bad_Name"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := topology.Parse("bad.yaml", []byte(tc.yaml), testKinds())
			if err == nil {
				t.Fatal("parsed; want errors")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

const header = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
stages:
`

// TestAllErrorsAtOnce: one file with many problems lists them all, in line
// order.
func TestAllErrorsAtOnce(t *testing.T) {
	src := header +
		"  - {name: a, kind: gen, outputs: [EVENTS], replica: 1}\n" +
		"  - {name: b, kind: nope, inputs: [EVENTS]}\n" +
		"  - {name: c, kind: collector, deploy: deployment, outputs: [EVENTS]}\n"
	_, err := topology.Parse("many.yaml", []byte(src), testKinds())
	te, ok := err.(*topology.Error)
	if !ok {
		t.Fatalf("error %T %v, want *topology.Error", err, err)
	}
	if len(te.Issues) != 3 {
		t.Fatalf("%d issues, want 3:\n%v", len(te.Issues), err)
	}
	for i, line := range []int{7, 8, 9} {
		if te.Issues[i].Line != line {
			t.Errorf("issue %d at line %d, want %d", i, te.Issues[i].Line, line)
		}
	}
}

func TestSubjectsOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"weft.events.>", "weft.calls.>", false},
		{"weft.events.>", "weft.events.n1.tcp", true},
		{"weft.*.n1", "weft.events.*", true},
		{"a.b", "a.b.c", false},
		{"a.>", "a", false},
		{">", "anything.at.all", true},
		{"a.*.c", "a.b.d", false},
	} {
		if got := topology.SubjectsOverlap(tc.a, tc.b); got != tc.want {
			t.Errorf("SubjectsOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestRenderGolden renders one topology in every format against golden
// files (go test -update rewrites them).
func TestRenderGolden(t *testing.T) {
	topo, err := topology.Parse("good.yaml", []byte(good), testKinds())
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range topology.Formats {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := topology.Render(&buf, topo, format); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "good."+format+".golden")
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("%s differs from %s:\n%s", format, path, buf.String())
			}
		})
	}
	if err := topology.Render(&bytes.Buffer{}, topo, "svg"); err == nil {
		t.Error("unknown format accepted")
	}
}
