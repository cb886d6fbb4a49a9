package values

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const topo = "# my topology\napiVersion: weft.dev/v1\nkind: Topology\nstages:\n  - {name: c, kind: collector}\n"

func TestBuild(t *testing.T) {
	cases := []struct {
		name, values string
		want         map[string]any // besides topologyFile
		err          string
	}{
		{name: "no values", want: map[string]any{}},
		{name: "only a comment", values: "# nothing\n", want: map[string]any{}},
		{name: "keys kept, topology replaced", values: "layout: daemonset\ntopology: {stages: []}\ntopologyFile: old\notlp: {endpoint: x}\n",
			want: map[string]any{"layout": "daemonset", "otlp": map[string]any{"endpoint": "x"}}},
		{name: "flow mapping", values: "{layout: sidecar}", want: map[string]any{"layout": "sidecar"}},
		{name: "a list", values: "- a\n", err: "values: "},
		{name: "a scalar", values: "3\n", err: "values: "},
		{name: "duplicate key", values: "a: 1\na: 2\n", err: `mapping key "a" already defined`},
		{name: "two documents", values: "a: 1\n---\nb: 2\n", err: "line 2: a second document"},
		{name: "bad yaml", values: "a: [\n", err: "values: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Build([]byte(topo), []byte(c.values))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := yaml.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got["topologyFile"] != topo {
				t.Errorf("topologyFile %q, want the topology verbatim", got["topologyFile"])
			}
			delete(got, "topologyFile")
			if len(got) != len(c.want) {
				t.Errorf("keys %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if yamlText(t, got[k]) != yamlText(t, v) {
					t.Errorf("%s: %v, want %v", k, got[k], v)
				}
			}
			if !strings.Contains(string(out), "topologyFile: |") {
				t.Errorf("the topology is not a literal block:\n%s", out)
			}
		})
	}
	if _, err := Build([]byte(" \n"), nil); err == nil {
		t.Error("an empty topology was accepted")
	}
}

func yamlText(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzBuild: whatever the user's files hold, Build returns an error or a
// values file that decodes to the topology text verbatim, keeping every
// other key of the user's values.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(topo), []byte("layout: daemonset\notlp: {endpoint: x}\n"))
	f.Add([]byte("a: b\n\ttabs and trailing spaces  \n"), []byte("# c\n"))
	f.Add([]byte("x"), []byte("{topology: 1}"))
	f.Fuzz(func(t *testing.T, topology, userValues []byte) {
		out, err := Build(topology, userValues)
		if err != nil {
			return
		}
		var got map[string]any
		if err := yaml.Unmarshal(out, &got); err != nil {
			t.Fatalf("the values written do not decode: %v\n%s", err, out)
		}
		if got["topologyFile"] != string(topology) {
			t.Fatalf("topologyFile %q, want %q", got["topologyFile"], topology)
		}
		var user map[string]any
		if err := yaml.Unmarshal(userValues, &user); err != nil {
			t.Fatalf("Build accepted values that do not decode: %v", err)
		}
		for k := range user {
			if _, ok := got[k]; !ok && k != "topology" {
				t.Fatalf("key %q lost", k)
			}
		}
	})
}
