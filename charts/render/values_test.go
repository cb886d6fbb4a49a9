package render

import (
	"encoding/json"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

// TestBadValues checks that `helm install` itself refuses values that
// cannot work, with a message naming what to fix: values.schema.json for
// typos and types, the chart's weft.validate for relations between values.
func TestBadValues(t *testing.T) {
	good := map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint}
	with := func(extra map[string]any) map[string]any {
		v := map[string]any{}
		for k, x := range good {
			v[k] = x
		}
		for k, x := range extra {
			v[k] = x
		}
		return v
	}
	topo := func(stages string) []byte {
		return []byte(`apiVersion: weft.dev/v1
kind: Topology
metadata: {name: t}
streams:
  EVENTS: {subjects: ["weft.events.>"], replicas: 3}
  CALLS:  {subjects: ["weft.calls.>"], replicas: 3}
stages:
` + stages)
	}
	tests := []struct {
		name     string
		topology []byte
		values   map[string]any
		want     []string // every one must be in the error
	}{
		{
			name:   "unknown top-level key",
			values: with(map[string]any{"replicaCount": 3}),
			want:   []string{"replicaCount"},
		},
		{
			name:   "typo in a nested key",
			values: with(map[string]any{"collector": map[string]any{"priviledged": true}}),
			want:   []string{"priviledged"},
		},
		{
			name:     "unknown key in a stage",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS], replica: 2}\n"),
			values:   good,
			want:     []string{"replica"},
		},
		{
			name: "unknown key in a stage given as values",
			values: with(map[string]any{"topology": map[string]any{
				"apiVersion": "weft.dev/v1", "kind": "Topology", "metadata": map[string]any{"name": "t"},
				"streams": map[string]any{"EVENTS": map[string]any{"subjects": []any{"weft.events.>"}}},
				"stages":  []any{map[string]any{"name": "c", "kind": "collector", "deploy": "daemonset", "outputs": []any{"EVENTS"}, "replica": 2}},
			}}),
			want: []string{"/topology/stages/0", "'replica' not allowed"},
		},
		{
			name:     "unknown key in a stream",
			topology: []byte("apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: t}\nstreams:\n  EVENTS: {subjects: [a.>], max_age: 1h}\nstages:\n  - {name: c, kind: collector, outputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{`topology.streams.EVENTS: unknown key "max_age"`},
		},
		{
			name:     "topology that is not YAML",
			topology: []byte("stages: [\n"),
			values:   good,
			want:     []string{"topologyFile: not YAML"},
		},
		{
			name:     "unknown deploy mode",
			topology: topo("  - {name: c, kind: collector, deploy: cronjob, outputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{`deploy "cronjob": want one of inprocess, daemonset`},
		},
		{
			name:     "collector as a deployment",
			topology: topo("  - {name: c, kind: collector, deploy: deployment, outputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{"topology.stages[0] (c)", "kind collector cannot use deploy: deployment", "a collector needs a node"},
		},
		{
			name:     "correlator as a daemonset",
			topology: topo("  - {name: x, kind: correlator, deploy: daemonset, inputs: [EVENTS], outputs: [CALLS]}\n"),
			values:   good,
			want:     []string{"kind correlator cannot use deploy: daemonset"},
		},
		{
			name:     "unknown kind",
			topology: topo("  - {name: x, kind: tracer, deploy: deployment, outputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{`unknown kind "tracer"`},
		},
		{
			name: "graph in Neo4j without a password",
			values: map[string]any{
				"neo4j": map[string]any{"uri": "neo4j://db:7687"},
				"otlp":  otlpEndpoint,
			},
			want: []string{"neo4j: no password", "neo4j.existingSecret"},
		},
		{
			// A layout fits itself to the values (TestNoValuesInstall); a
			// user's topology is taken as it is.
			name:     "graph in Neo4j without a server",
			topology: example(t, "hybrid"),
			values:   map[string]any{"neo4j": map[string]any{"existingSecret": "s"}, "otlp": otlpEndpoint},
			want:     []string{"set neo4j.uri", "neo4j.evaluation.enabled"},
		},
		{
			name:     "a topology with Neo4j and OTLP, no values",
			topology: example(t, "hybrid"),
			values:   nil,
			want:     []string{"neo4j: no password", "an otlp stage needs an endpoint"},
		},
		{
			name: "short evaluation password",
			values: map[string]any{
				"neo4j": map[string]any{"evaluation": map[string]any{"enabled": true}, "password": "neo4j"},
				"otlp":  otlpEndpoint,
			},
			want: []string{"at least 8 characters"},
		},
		{
			name:     "sidecar of no stage",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS]}\n  - {name: o, kind: otlp, deploy: sidecar, sidecarOf: colector, inputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{`sidecarOf "colector" names no stage`},
		},
		{
			name:     "sidecar without sidecarOf",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS]}\n  - {name: o, kind: otlp, deploy: sidecar, inputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{"deploy: sidecar needs sidecarOf"},
		},
		{
			name:     "autoscaled daemonset",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS], autoscale: {min: 1, max: 3}}\n"),
			values:   good,
			want:     []string{"autoscale needs deploy: deployment or statefulset"},
		},
		{
			name:     "graph stage with two replicas",
			topology: topo("  - {name: g, kind: graph, deploy: deployment, replicas: 2, inputs: [CALLS]}\n"),
			values:   good,
			want:     []string{"(g): a graph stage runs as one replica (replicas is 2)"},
		},
		{
			name:     "autoscaled graph stage",
			topology: topo("  - {name: g, kind: graph, deploy: statefulset, inputs: [CALLS], autoscale: {min: 1, max: 3}}\n"),
			values:   good,
			want:     []string{"a graph stage cannot autoscale"},
		},
		{
			name: "correlator autoscaled past its partitions",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS]}\n" +
				"  - {name: x, kind: correlator, deploy: deployment, inputs: [EVENTS], outputs: [CALLS], autoscale: {min: 1, max: 3}}\n"),
			values: good,
			want:   []string{"(x): autoscale.max 3 is above its input's partitions (1)", "lower autoscale.max to 1"},
		},
		{
			name:     "undeclared stream",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENT]}\n"),
			values:   good,
			want:     []string{`stream "EVENT" is not declared`},
		},
		{
			name:     "reserved stage name",
			topology: topo("  - {name: nats, kind: collector, deploy: daemonset, outputs: [EVENTS]}\n"),
			values:   good,
			want:     []string{`stage name "nats" is reserved`},
		},
		{
			name:     "stream replicas above the NATS cluster",
			topology: topo("  - {name: c, kind: collector, deploy: daemonset, outputs: [EVENTS]}\n"),
			values:   with(map[string]any{"nats": map[string]any{"replicas": 1}}),
			want:     []string{"topology.streams.EVENTS: replicas 3 is more than the 1 NATS servers"},
		},
		{
			name:   "NATS credentials for the chart's own NATS",
			values: with(map[string]any{"nats": map[string]any{"auth": map[string]any{"existingSecret": "s"}}}),
			want:   []string{"nats.auth: credentials are for an external NATS"},
		},
		{
			name:   "workload settings for no stage",
			values: with(map[string]any{"workloads": map[string]any{"corelator": map[string]any{"resourcesPreset": "large"}}}),
			want:   []string{"workloads.corelator: names no stage"},
		},
		{
			name: "every problem at once",
			topology: topo("  - {name: c, kind: collector, deploy: deployment, outputs: [EVENTS]}\n" +
				"  - {name: g, kind: graph, deploy: deployment, inputs: [CALLS], config: {store: neo4j}}\n"),
			values: map[string]any{"otlp": otlpEndpoint},
			want:   []string{"3 problem(s)", "cannot use deploy: deployment", "neo4j: a graph stage", "neo4j: no password"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.topology, Options{Values: tt.values})
			if err == nil {
				t.Fatal("rendered; want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRenderSidecarErrors(t *testing.T) {
	hybrid := example(t, "hybrid")
	vals := Options{Values: map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint}}
	tests := []struct {
		name, stage string
		want        string
	}{
		{"not a stage name", "Collector; rm", "not a stage name"},
		{"no such stage", "tracer", `no stage "tracer"`},
		{"a stage the chart deploys", "correlator", "not `deploy: sidecar` with `sidecarOf: app`"},
		{"a sidecar of another stage", "node-otlp", "not `deploy: sidecar` with `sidecarOf: app`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RenderSidecar(hybrid, tt.stage, vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// TestLayoutsAreTheExamples keeps the chart's shipped layouts identical to
// examples/topologies (Helm cannot read files outside the chart, so they
// are copies).
func TestLayoutsAreTheExamples(t *testing.T) {
	for _, name := range []string{"hybrid", "daemonset", "sidecar", "local"} {
		t.Run(name, func(t *testing.T) {
			c, err := Chart()
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, f := range c.Files {
				if f.Name == "files/topologies/"+name+".yaml" {
					got = f.Data
				}
			}
			if want := example(t, name); string(got) != string(want) {
				t.Errorf("charts/weft/files/topologies/%s.yaml differs from examples/topologies/%s.yaml: copy it over", name, name)
			}
		})
	}
}

// TestTopologyKeysMatchModel keeps the chart's idea of a topology document
// (weft.topologyKeys, used on topologyFile, and values.schema.json, used on
// topology) in step with the binary's model in streams/topology: a key
// the binary reads must not be refused by the chart, and the reverse.
func TestTopologyKeysMatchModel(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	var helpers, schemaJSON []byte
	for _, f := range c.Templates {
		if f.Name == "templates/_helpers.tpl" {
			helpers = f.Data
		}
	}
	schemaJSON = c.Schema
	m := regexp.MustCompile(`(?s)define "weft.topologyKeys" -}}\n(.*?)\n\{\{- end`).FindSubmatch(helpers)
	if m == nil {
		t.Fatal("no weft.topologyKeys in _helpers.tpl")
	}
	var chartKeys map[string][]string
	if err := yaml.Unmarshal(m[1], &chartKeys); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(schemaJSON, &schema); err != nil {
		t.Fatal(err)
	}
	top := valueAt(schema, "properties", "topology", "properties")
	schemaProps := map[string]any{
		"topology":  top,
		"metadata":  valueAt(top.(map[string]any), "metadata", "properties"),
		"stream":    valueAt(top.(map[string]any), "streams", "additionalProperties", "properties"),
		"stage":     valueAt(top.(map[string]any), "stages", "items", "properties"),
		"autoscale": valueAt(top.(map[string]any), "stages", "items", "properties", "autoscale", "properties"),
	}
	model := map[string]reflect.Type{
		"topology":  reflect.TypeFor[topology.Topology](),
		"metadata":  reflect.TypeFor[topology.Metadata](),
		"stream":    reflect.TypeFor[topology.Stream](),
		"stage":     reflect.TypeFor[topology.Stage](),
		"autoscale": reflect.TypeFor[topology.Autoscale](),
	}
	for name, typ := range model {
		t.Run(name, func(t *testing.T) {
			var want []string
			for f := range typ.Fields() {
				tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
				if tag != "" && tag != "-" {
					want = append(want, tag)
				}
			}
			slices.Sort(want)
			if got := slices.Sorted(slices.Values(chartKeys[name])); !slices.Equal(got, want) {
				t.Errorf("weft.topologyKeys %s: %v, streams/topology reads %v", name, got, want)
			}
			props, _ := schemaProps[name].(map[string]any)
			if got := slices.Sorted(maps.Keys(props)); !slices.Equal(got, want) {
				t.Errorf("values.schema.json %s: %v, streams/topology reads %v", name, got, want)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	kinds, err := Kinds()
	if err != nil {
		t.Fatal(err)
	}
	// A collector needs a node (DESIGN.md); the sidecar mode is for the
	// users' pods in the sidecar layout.
	if got := kinds["collector"]; !slices.Equal(got, []string{"daemonset", "inprocess", "sidecar"}) {
		t.Errorf("collector deploy modes %v", got)
	}
	for k, modes := range kinds {
		for _, m := range modes {
			if !slices.Contains(stage.DeployModes, stage.DeployMode(m)) {
				t.Errorf("kind %s: deploy mode %q is none of %v", k, m, stage.DeployModes)
			}
		}
	}
}

func TestParseValues(t *testing.T) {
	v, err := ParseValues([]byte("neo4j:\n  uri: neo4j://db:7687\n  existingSecret: s\notlp: {endpoint: 'http://c:4317'}\nlayout: daemonset\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(nil, Options{Values: v})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "metadata: {name: daemonset}") {
		t.Error("values from the file did not choose the daemonset layout")
	}
	if _, err := ParseValues([]byte("a: [")); err == nil {
		t.Error("bad YAML parsed")
	}
}
