package render

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftobs/weft/streams/topology"
)

// userSecrets are the Secrets rendered from values (a password given),
// not the ones the chart generates (the NATS CA and certificates, the API
// token).
func userSecrets(objs []object) []*corev1.Secret {
	var out []*corev1.Secret
	for _, s := range ofType[*corev1.Secret](objs) {
		if !strings.HasSuffix(s.Name, "-nats-ca") && !strings.HasSuffix(s.Name, "-nats-tls") && !strings.HasSuffix(s.Name, "-nats-operator-tls") && !strings.HasSuffix(s.Name, "-api-token") {
			out = append(out, s)
		}
	}
	return out
}

// TestNoValuesInstall checks what `helm install weft charts/weft` gives
// with no values: the values pass the chart's schema and its checks (Render
// runs both), every stage of the default layout has its workload, the
// graph is kept in the embedded store by the graph stage, and nothing that
// needs a value nobody gave is rendered: no otlp stage without an endpoint,
// no Neo4j, no empty environment variable.
func TestNoValuesInstall(t *testing.T) {
	out, err := Render(nil, Options{})
	if err != nil {
		t.Fatalf("helm install with no values fails: %v", err)
	}
	objs := decode(t, out)
	top := topologyOf(t, objs)

	wantWorkloads := map[string]string{"collector": "DaemonSet", "correlator": "Deployment", "graph": "Deployment"}
	var names []string
	for _, s := range top.Stages {
		names = append(names, s.Name)
		if s.Kind == "otlp" {
			t.Errorf("stage %s: an otlp stage with no otlp.endpoint", s.Name)
		}
		if s.Kind == "graph" && storeOf(s) != "embedded" {
			t.Errorf("stage %s stores the graph in %q, want the embedded store", s.Name, storeOf(s))
		}
	}
	slices.Sort(names)
	if want := []string{"collector", "correlator", "graph"}; !slices.Equal(names, want) {
		t.Errorf("stages %v, want %v", names, want)
	}
	got := map[string]string{}
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			for _, st := range stagesOf(c) {
				got[st] = p.kind
			}
			for _, e := range c.Env {
				if e.Value == "" && e.ValueFrom == nil {
					t.Errorf("%s/%s: env %s is empty", p, c.Name, e.Name)
				}
				if strings.HasPrefix(e.Name, "WEFT_NEO4J") || strings.HasPrefix(e.Name, "OTEL_") {
					t.Errorf("%s/%s: env %s with neither Neo4j nor OTLP set", p, c.Name, e.Name)
				}
			}
		}
	}
	for st, kind := range wantWorkloads {
		if got[st] != kind {
			t.Errorf("stage %s runs in %q, want a %s", st, got[st], kind)
		}
	}
	for _, o := range objs {
		if strings.Contains(o.Meta.GetName(), "neo4j") || strings.Contains(o.Meta.GetName(), "migrat") {
			t.Errorf("%v rendered with no Neo4j asked for", o)
		}
		if strings.Contains(o.Meta.GetName(), "otlp") {
			t.Errorf("%v rendered with no OTLP endpoint", o)
		}
	}
	if n := len(userSecrets(objs)) + len(ofType[*batchv1.Job](objs)); n != 0 {
		t.Errorf("%d Secrets and Jobs rendered; with no values there is no password and no migration", n)
	}
	var generated []string
	for _, s := range ofType[*corev1.Secret](objs) {
		generated = append(generated, s.Name)
	}
	slices.Sort(generated)
	if want := []string{"weft-api-token", "weft-nats-ca", "weft-nats-operator-tls", "weft-nats-tls"}; !slices.Equal(generated, want) {
		t.Errorf("generated Secrets %v, want %v (the NATS CA and certificates, the operator's certificate, the API token)", generated, want)
	}
	var nats *appsv1.StatefulSet
	for _, s := range ofType[*appsv1.StatefulSet](objs) {
		if s.Labels["app.kubernetes.io/component"] == "nats" {
			nats = s
		}
	}
	if nats == nil {
		t.Error("no NATS StatefulSet: the stages have no streams")
	}
	// The graph stage serves /api/v1/graph on its HTTP port, which its
	// Service names for kubectl port-forward.
	var svc *corev1.Service
	for _, s := range ofType[*corev1.Service](objs) {
		if s.Name == "weft-graph" {
			svc = s
		}
	}
	if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" && p.Port == 7680 }) {
		t.Errorf("no Service weft-graph with port http 7680: %v", svc)
	}
}

// TestNotes checks what `helm install` prints: how to reach the graph
// and what to set next, and only what applies.
func TestNotes(t *testing.T) {
	tests := []struct {
		name      string
		topology  []byte
		values    map[string]any
		want, not []string
	}{
		{
			name: "no values",
			want: []string{
				"kubectl port-forward -n weft svc/weft-graph 7680:7680",
				"http://127.0.0.1:7680/api/v1/graph",
				// The API needs the release's token.
				"kubectl get secret -n weft weft-api-token", `curl -H "Authorization: Bearer $TOKEN"`,
				"--set neo4j.uri=", "neo4j.existingSecret", "neo4j.evaluation.enabled=true",
				"--set otlp.endpoint=",
				"otlp stage(s) otlp, node-otlp left out",
				// The streams, as the operator.
				"kubectl create token weft-operator -n weft --audience weft-nats", "Secret weft-nats-operator-tls",
			},
		},
		{
			name:   "neo4j and otlp set",
			values: map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint},
			want:   []string{"Graph:   neo4j+s://neo4j.databases.svc:7687", "deployment/weft-otlp: otlp"},
			not:    []string{"port-forward", "What to set next", "left out"},
		},
		{
			name:     "own topology",
			topology: example(t, "local"),
			want:     []string{"svc/weft-inprocess 7680:7680", "/api/v1/graph"},
			not:      []string{"What to set next"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notes, err := Notes(tt.topology, Options{Values: tt.values})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, notes)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(notes, n) {
					t.Errorf("NOTES.txt has %q:\n%s", n, notes)
				}
			}
		})
	}
}

// TestOneNodeInstall checks that a cluster of one node can install every
// shipped layout with one server of NATS in an emptyDir (no storage
// provisioner): the layout's streams get as many replicas as there are
// NATS servers, the ConfigMap says so, and the one server has no
// anti-affinity that a single node could not meet. With an external NATS
// (nats.url) the layout's replicas are the user's NATS's business.
func TestOneNodeInstall(t *testing.T) {
	oneNode := map[string]any{"replicas": 1, "storage": map[string]any{"emptyDir": true, "size": "1Gi"}, "maxFileStore": "900Mi"}
	for _, layout := range []string{"hybrid", "daemonset", "sidecar", "local"} {
		t.Run(layout, func(t *testing.T) {
			out, err := Render(nil, Options{Values: map[string]any{"layout": layout, "nats": oneNode}})
			if err != nil {
				t.Fatalf("helm install --set layout=%s,nats.replicas=1 on one node: %v", layout, err)
			}
			objs := decode(t, out)
			top := topologyOf(t, objs)
			orig := map[string]int{}
			for _, st := range topologyFromExample(t, layout).Streams {
				orig[st.Name] = st.Replicas
			}
			var lowered []string
			for _, st := range top.Streams {
				if st.Replicas > 1 {
					t.Errorf("stream %s: replicas %d with one NATS server", st.Name, st.Replicas)
				}
				if orig[st.Name] > 1 {
					lowered = append(lowered, st.Name)
				}
			}
			slices.Sort(lowered)
			want := len(lowered) > 0
			var text string
			for _, cm := range ofType[*corev1.ConfigMap](objs) {
				text += cm.Data["topology.yaml"]
			}
			note := "stream(s) " + strings.Join(lowered, ", ") + " have replicas: 1, as many as the chart's NATS servers (nats.replicas)"
			if got := strings.Contains(text, note); got != want {
				t.Errorf("the topology ConfigMap notes %q: %v, want %v:\n%s", note, got, want, text)
			}
			for _, s := range ofType[*appsv1.StatefulSet](objs) {
				if s.Labels["app.kubernetes.io/component"] == "nats" {
					checkNATSPod(t, s, 1)
				}
			}
		})
	}
	out, err := Render(nil, Options{Values: map[string]any{"nats": map[string]any{"url": "nats://nats.messaging.svc:4222", "replicas": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range topologyOf(t, decode(t, out)).Streams {
		if st.Replicas != 3 {
			t.Errorf("external NATS: stream %s has replicas %d, want the layout's 3", st.Name, st.Replicas)
		}
	}
}

func topologyFromExample(t *testing.T, name string) *topology.Topology {
	t.Helper()
	top, err := topology.Parse(name+".yaml", example(t, name), kindsForParse())
	if err != nil {
		t.Fatal(err)
	}
	return top
}
