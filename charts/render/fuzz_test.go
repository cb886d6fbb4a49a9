package render

import (
	"testing"
)

// FuzzRender: a user's values file and topology, through the path `helm
// install -f` takes (Helm's values parsing, the schema, the chart's own
// checks, the templates), render or fail with an error; never a panic.
func FuzzRender(f *testing.F) {
	f.Add([]byte("otlp: {endpoint: \"http://otel:4318\"}\nneo4j: {uri: \"bolt://neo4j:7687\"}\n"), []byte("apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: x}\nstages:\n  -\n"))
	f.Add([]byte("layout: daemonset\nneo4j: {evaluation: {enabled: true}}\n"), []byte(nil))
	f.Add([]byte("nats: {replicas: three}\n"), []byte("stages: [\n"))
	f.Add([]byte("layout: sidecar\notlp: {endpoint: x}\n"), []byte(nil))
	f.Fuzz(func(t *testing.T, values, topology []byte) {
		v, err := ParseValues(values)
		if err != nil {
			return
		}
		_, _ = Render(topology, Options{Values: v})
	})
}
