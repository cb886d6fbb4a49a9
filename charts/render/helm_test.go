package render

import (
	"cmp"
	"fmt"
	"path"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// helmRender is Render done with the Helm SDK's own chartutil, engine and
// releaseutil packages, as render.go did before it used its trimmed copy
// of them (internal/helm, which links no Kubernetes client or scheme).
// The copy must render what Helm renders: TestSameAsHelm compares them.
func helmRender(topologyYAML []byte, opts Options) (string, error) {
	c, err := Chart()
	if err != nil {
		return "", err
	}
	files, caps, err := helmRenderFiles(c, topologyYAML, opts)
	if err != nil {
		return "", err
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return "", fmt.Errorf("sort rendered manifests: %w", err)
	}
	var b strings.Builder
	for _, m := range manifests {
		writeSource(&b, m.Name, m.Content)
	}
	for _, h := range hooks {
		writeSource(&b, h.Path, h.Manifest)
	}
	return b.String(), nil
}

// helmRenderFiles is renderFiles with the Helm SDK.
func helmRenderFiles(c *chart.Chart, topologyYAML []byte, opts Options) (map[string]string, *chartutil.Capabilities, error) {
	vals, err := chartValues(topologyYAML, opts)
	if err != nil {
		return nil, nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(cmp.Or(opts.KubeVersion, DefaultKubeVersion))
	if err != nil {
		return nil, nil, fmt.Errorf("kube version %q: %w", opts.KubeVersion, err)
	}
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, opts.APIVersions...)
	if c.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(c.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, nil, fmt.Errorf("chart requires kubeVersion %s, cluster is %s", c.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	release := chartutil.ReleaseOptions{Name: cmp.Or(opts.ReleaseName, "weft"), Namespace: cmp.Or(opts.Namespace, "weft"), Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(c, vals, release, caps, false)
	if err != nil {
		return nil, nil, fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(c, rv)
	if err != nil {
		return nil, nil, fmt.Errorf("render chart: %w", err)
	}
	delete(files, path.Join(c.Name(), "templates", "NOTES.txt"))
	return files, caps, nil
}

// TestSameAsHelm renders with internal/helm and with the Helm SDK and
// wants the same text, or the same error: every render case, values the
// schema or the chart's own validation refuse, other kube versions and a
// template probing what the engine offers templates (capabilities, Helm
// version, lookup, files, tpl, required, toYaml and friends).
func TestSameAsHelm(t *testing.T) {
	type sameCase struct {
		name     string
		topology []byte
		opts     Options
		fails    bool
	}
	var cases []sameCase
	for _, c := range renderCases(t) {
		cases = append(cases, sameCase{c.name, c.topology, c.opts, false})
	}
	good := map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint}
	cases = append(cases,
		sameCase{"schema-refuses", nil, Options{Values: map[string]any{"neo4j": externalNeo4j, "otlp": otlpEndpoint, "layuot": "hybrid", "nats": map[string]any{"replicas": "three"}}}, true},
		sameCase{"chart-refuses", example(t, "hybrid"), Options{Values: map[string]any{"otlp": otlpEndpoint}}, true},
		sameCase{"kube-too-old", nil, Options{Values: good, KubeVersion: "v1.19.0"}, true},
		sameCase{"kube-newer", example(t, "daemonset"), Options{Values: good, KubeVersion: "1.34.2"}, false},
		sameCase{"bad-kube-version", nil, Options{Values: good, KubeVersion: "one"}, true},
		sameCase{"bad-topology", []byte("stages: [\n"), Options{Values: good}, true},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, gotErr := Render(c.topology, c.opts)
			want, wantErr := helmRender(c.topology, c.opts)
			if (wantErr != nil) != c.fails {
				t.Fatalf("Helm's error %v; this case should fail: %v", wantErr, c.fails)
			}
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("error:\n%v\nHelm's:\n%v", gotErr, wantErr)
			}
			if got != want {
				t.Errorf("rendered text differs from Helm's:\n%s", firstDiff(want, got))
			}
		})
	}

	// What the engine gives templates besides the chart's own use of it.
	probe := &chart.File{Name: "templates/zz-probe.txt", Data: []byte(`
kube: {{ .Capabilities.KubeVersion.Version }} {{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }} {{ .Capabilities.KubeVersion }}
helm: {{ .Capabilities.HelmVersion.Version }} {{ .Capabilities.HelmVersion | toJson }}
apis: {{ .Capabilities.APIVersions | toJson }}
has: {{ .Capabilities.APIVersions.Has "apps/v1" }} {{ .Capabilities.APIVersions.Has "batch/v1/Job" }} {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}
release: {{ .Release | toYaml | nindent 2 }}
chart: {{ .Chart.Name }} {{ .Chart.IsRoot }} {{ .Template.Name }} {{ .Template.BasePath }}
lookup: {{ lookup "v1" "Secret" "weft" "x" | toJson }}
files: {{ .Files.Glob "files/**" | len }} {{ range $p, $_ := .Files.Glob "files/**" }}{{ $p }} {{ end }} {{ .Files.Get "Chart.yaml" | len }} {{ (.Files.Glob "files/**").AsConfig | sha256sum }}
tpl: {{ tpl "{{ .Release.Name }}-{{ .Values.layout }}" . }}
yaml: {{ dict "b" 1 "a" (list "x" 2.5 true) | toYaml | fromYaml | toJson }} {{ "a: [1" | fromYaml | toJson }}
toml: {{ dict "k" "v" | toToml }}
dns: [{{ getHostByName "localhost" }}]
missing: [{{ .Values.noSuchValue }}]
values: {{ .Values | toJson | sha256sum }}
`)}
	for _, c := range cases[:2] {
		t.Run("probe-"+c.name, func(t *testing.T) {
			ch, err := Chart()
			if err != nil {
				t.Fatal(err)
			}
			ch.Templates = append(ch.Templates, probe)
			got, _, err := renderFiles(ch, c.topology, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			hc, err := Chart()
			if err != nil {
				t.Fatal(err)
			}
			hc.Templates = append(hc.Templates, probe)
			want, _, err := helmRenderFiles(hc, c.topology, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("%d files, Helm renders %d", len(got), len(want))
			}
			for name, w := range want {
				if got[name] != w {
					t.Errorf("%s differs from Helm's:\n%s", name, firstDiff(w, got[name]))
				}
			}
			if strings.Contains(got["weft/templates/zz-probe.txt"], "files: 0 ") {
				t.Errorf("the probe saw no chart files:\n%s", got["weft/templates/zz-probe.txt"])
			}
		})
	}
}
