package render

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/weftobs/weft/examples/topologies"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// object is one decoded Kubernetes object of a rendered chart.
type object struct {
	Source string // the template it came from
	GVK    schema.GroupVersionKind
	Meta   metav1.Object
	Obj    runtime.Object
}

func (o object) String() string {
	return fmt.Sprintf("%s %s (%s)", o.GVK.Kind, o.Meta.GetName(), o.Source)
}

// crdTypes are the custom resources the chart may render; the built-in
// kinds come from client-go's scheme.
var crdTypes = map[schema.GroupVersionKind]func() runtime.Object{
	monitoringv1.SchemeGroupVersion.WithKind("ServiceMonitor"): func() runtime.Object { return &monitoringv1.ServiceMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("PrometheusRule"): func() runtime.Object { return &monitoringv1.PrometheusRule{} },
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decode splits a rendered chart into documents and decodes each strictly
// into its Kubernetes API type: an unknown or duplicated field, a wrong
// type, or an unknown kind fails the test.
func decode(t *testing.T, manifest string) []object {
	t.Helper()
	var out []object
	for _, doc := range docSep.Split(manifest, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		src := ""
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", src, err, doc)
		}
		gvk := tm.GroupVersionKind()
		var obj runtime.Object
		if f, ok := crdTypes[gvk]; ok {
			obj = f()
		} else {
			o, err := scheme.Scheme.New(gvk)
			if err != nil {
				t.Fatalf("%s: %v is no Kubernetes API type: %v", src, gvk, err)
			}
			obj = o
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: strict decode of %v: %v\n%s", src, gvk, err, doc)
		}
		meta, err := metaOf(obj)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		out = append(out, object{Source: src, GVK: gvk, Meta: meta, Obj: obj})
	}
	if len(out) == 0 {
		t.Fatal("the chart rendered no objects")
	}
	return out
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no ObjectMeta", obj)
	}
	return m, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
// Generated secrets are compared as <generated>.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = WithoutGenerated(got)
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./charts/render -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("rendered chart differs from %s (run with -update if the change is intended):\n%s", path, firstDiff(string(want), got))
	}
}

// firstDiff shows the first differing line with some context, enough to
// see what changed without printing two whole charts.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			from := max(0, i-5)
			ctx := strings.Join(gl[from:min(i, len(gl))], "\n")
			return fmt.Sprintf("line %d:\n%s\n- want: %q\n+ got:  %q", i+1, ctx, w, g)
		}
	}
	return "(same lines; different line endings?)"
}

// example reads an example topology shipped in examples/topologies.
func example(t *testing.T, name string) []byte {
	t.Helper()
	b, err := topologies.FS.ReadFile(name + ".yaml")
	if err != nil {
		t.Fatalf("example topology %s: %v", name, err)
	}
	return b
}

// renderCase is one way to install the chart, rendered for golden files
// and policy tests.
type renderCase struct {
	name     string
	topology []byte // nil: the chart's default layout
	opts     Options
}

var monitoringAPIs = []string{"monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"}

// externalNeo4j and endpoint are the values an installation with an
// existing Neo4j and an OTLP backend gives.
var (
	externalNeo4j = map[string]any{"uri": "neo4j+s://neo4j.databases.svc:7687", "existingSecret": "weft-neo4j"}
	otlpEndpoint  = map[string]any{"endpoint": "http://otel-collector.observability.svc:4317"}
)

// renderCases covers every example topology, the default install, and the
// switches that change which objects exist (external NATS, evaluation
// Neo4j, Prometheus Operator CRDs present).
func renderCases(t *testing.T) []renderCase {
	return []renderCase{
		// `helm install weft charts/weft` with no values at all.
		{name: "defaults"},
		{name: "default-hybrid", opts: Options{
			Values:      map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint},
			APIVersions: monitoringAPIs,
		}},
		{name: "hybrid-evaluation", topology: example(t, "hybrid"), opts: Options{
			ReleaseName: "demo", Namespace: "observability",
			Values: map[string]any{
				"neo4j": map[string]any{"evaluation": map[string]any{"enabled": true}, "password": "change-me-please"},
				"otlp":  otlpEndpoint,
			},
		}},
		{name: "daemonset", topology: example(t, "daemonset"), opts: Options{
			Values: map[string]any{
				"nats":  map[string]any{"url": "nats://nats.messaging.svc:4222", "auth": map[string]any{"existingSecret": "weft-nats"}, "networkPolicyTo": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "messaging"}}}}},
				"neo4j": externalNeo4j,
				"otlp":  map[string]any{"endpoint": "https://otlp.example.com", "networkPolicyTo": []any{map[string]any{"ipBlock": map[string]any{"cidr": "203.0.113.0/24"}}}},
			},
			APIVersions: monitoringAPIs,
		}},
		{name: "sidecar", topology: example(t, "sidecar"), opts: Options{
			Values: map[string]any{"otlp": otlpEndpoint},
		}},
		{name: "local", topology: example(t, "local")},
	}
}

// rendered renders a case and decodes it.
func (c renderCase) render(t *testing.T) (string, []object) {
	t.Helper()
	out, err := Render(c.topology, c.opts)
	if err != nil {
		t.Fatalf("render %s: %v", c.name, err)
	}
	return out, decode(t, out)
}

func TestRenderGolden(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			out, _ := c.render(t)
			golden(t, c.name+".yaml", out)
		})
	}
}

func TestRenderSidecarGolden(t *testing.T) {
	out, err := RenderSidecar(example(t, "sidecar"), "collector", Options{Values: map[string]any{"otlp": otlpEndpoint}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "sidecar-snippet-collector.yaml", out)
	// The snippet is a fragment of a PodSpec; strict decoding checks every
	// field is one Kubernetes knows.
	var spec corev1.PodSpec
	if err := yaml.UnmarshalStrict([]byte(out), &spec); err != nil {
		t.Fatalf("snippet is no PodSpec fragment: %v\n%s", err, out)
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if !strings.HasPrefix(v.Name, "weft-") {
			t.Errorf("volume %s: names in the users' pods start with weft-", v.Name)
		}
		volumes[v.Name] = true
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want the stage's one", len(spec.Containers))
	}
	for _, m := range spec.Containers[0].VolumeMounts {
		if !volumes[m.Name] {
			t.Errorf("mount %s has no volume in the snippet", m.Name)
		}
	}
	if !volumes["weft-socket"] || spec.Volumes[slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "weft-socket" })].EmptyDir == nil {
		t.Error("no weft-socket emptyDir shared with the application")
	}
}
