package render

import (
	"cmp"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"

	"github.com/weftobs/weft/charts"
)

// Options are what `helm install` would be given besides the chart. The
// zero value renders release "weft" in namespace "weft" with the chart's
// default values and Helm's default capabilities.
type Options struct {
	// ReleaseName names the release; default "weft".
	ReleaseName string
	// Namespace is the release's namespace; default "weft".
	Namespace string
	// Values are merged over the chart's values.yaml, as with
	// `helm install -f`. Render does not modify the map.
	Values map[string]any
	// APIVersions are API versions the cluster serves besides the built-in
	// ones, e.g. "monitoring.coreos.com/v1/ServiceMonitor" (which turns on
	// the ServiceMonitor and PrometheusRule).
	APIVersions []string
	// KubeVersion is the cluster's version; default DefaultKubeVersion.
	KubeVersion string
}

// DefaultKubeVersion is the cluster version rendered for when Options give
// none. Helm's own default depends on how the helm binary was built (often
// v1.20, below the chart's kubeVersion), so it is fixed here.
const DefaultKubeVersion = "v1.31.0"

// Chart loads the embedded chart. Each call returns a fresh copy, so the
// caller may modify it.
func Chart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(charts.FS, charts.ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, charts.ChartDir+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load embedded chart: %w", err)
	}
	return c, nil
}

// Render renders the chart for a topology, as `helm template` would: every
// object `helm install` creates, hooks last, each document headed by
// "# Source: <template>". A nil topologyYAML renders the layout the values
// choose (hybrid by default). Invalid values fail with the chart's own
// message, listing every problem.
func Render(topologyYAML []byte, opts Options) (string, error) {
	c, err := Chart()
	if err != nil {
		return "", err
	}
	files, caps, err := renderFiles(c, topologyYAML, opts)
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

// writeSource appends one rendered document, headed by its template.
func writeSource(b *strings.Builder, name, content string) {
	fmt.Fprintf(b, "---\n# Source: %s\n%s\n", name, strings.TrimSpace(content))
}

// chartValues is opts.Values with the topology given as text, as
// `helm install --set-file topologyFile=…`: the chart parses the text and
// its ConfigMap carries it verbatim, comments and line numbers included.
func chartValues(topologyYAML []byte, opts Options) (map[string]any, error) {
	vals := maps.Clone(opts.Values)
	if vals == nil {
		vals = map[string]any{}
	}
	if topologyYAML != nil {
		if len(strings.TrimSpace(string(topologyYAML))) == 0 {
			return nil, fmt.Errorf("topology: empty document")
		}
		vals["topologyFile"] = string(topologyYAML)
		delete(vals, "topology")
	}
	return vals, nil
}

// ParseValues decodes a values file (`helm install -f FILE`) for
// Options.Values, with the types Helm itself gives values.
func ParseValues(data []byte) (map[string]any, error) {
	v, err := chartutil.ReadValues(data)
	if err != nil {
		return nil, fmt.Errorf("decode values: %w", err)
	}
	return v.AsMap(), nil
}

// stageName is what the chart accepts as a stage name; checked here too
// because RenderSidecar writes the name into a template.
var stageName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// RenderSidecar renders, for a stage with `deploy: sidecar` and
// `sidecarOf: app`, the part of a PodSpec to merge into an application's
// pod: the container running the stage, and the volumes it needs (among
// them the emptyDir shared with the application for a unix socket). The
// result is YAML with `containers` and `volumes`, led by comments saying
// what else the pod needs. The whole chart is validated first, so a
// topology `helm install` would refuse is refused here too.
func RenderSidecar(topologyYAML []byte, stage string, opts Options) (string, error) {
	if !stageName.MatchString(stage) {
		return "", fmt.Errorf("sidecar stage %q: not a stage name (a DNS label)", stage)
	}
	c, err := Chart()
	if err != nil {
		return "", err
	}
	// The snippet is the chart's named template "weft.sidecarSnippet"; a
	// template file added here calls it, so the text is the chart's own
	// (the same the chart puts in its sidecars ConfigMap).
	const snippet = "templates/zz-weft-sidecar-snippet.txt"
	c.Templates = append(c.Templates, &chart.File{
		Name: snippet,
		Data: fmt.Appendf(nil, "{{- include \"weft.init\" . -}}\n{{- include \"weft.sidecarSnippet\" (dict \"root\" $ \"stage\" %q) }}\n", stage),
	})
	files, _, err := renderFiles(c, topologyYAML, opts)
	if err != nil {
		return "", err
	}
	out, ok := files[path.Join(c.Name(), snippet)]
	if !ok {
		return "", fmt.Errorf("render sidecar %s: the chart rendered no snippet", stage)
	}
	return strings.TrimSpace(out) + "\n", nil
}

// kindsDefine finds the chart's table of stage kinds in its helpers.
var kindsDefine = regexp.MustCompile(`(?s)\{\{- define "weft.kinds" -\}\}\n(.*?)\n\{\{- end`)

// Kinds returns the stage kinds the chart knows, each with the deploy
// modes it accepts for it, the first being the default for a stage that
// names none. It must equal stage.Kind.Deploy of every kind cmd/weft
// registers; a test there can compare them, since the chart cannot import
// the registry.
func Kinds() (map[string][]string, error) {
	c, err := Chart()
	if err != nil {
		return nil, err
	}
	for _, f := range c.Templates {
		if f.Name != "templates/_helpers.tpl" {
			continue
		}
		m := kindsDefine.FindSubmatch(f.Data)
		if m == nil {
			break
		}
		var kinds map[string][]string
		if err := yaml.UnmarshalStrict(m[1], &kinds); err != nil {
			return nil, fmt.Errorf("chart kinds table: %w", err)
		}
		return kinds, nil
	}
	return nil, fmt.Errorf("the chart has no weft.kinds table in templates/_helpers.tpl")
}

// renderFiles renders every template of c: Helm's schema validation, then
// its template engine, with client-only capabilities as `helm template`.
func renderFiles(c *chart.Chart, topologyYAML []byte, opts Options) (map[string]string, *chartutil.Capabilities, error) {
	vals, err := chartValues(topologyYAML, opts)
	if err != nil {
		return nil, nil, err
	}
	caps, release, err := capabilities(c, opts)
	if err != nil {
		return nil, nil, err
	}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(c, vals, release, caps, false)
	if err != nil {
		return nil, nil, fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(c, rv)
	if err != nil {
		return nil, nil, fmt.Errorf("render chart: %w", err)
	}
	// NOTES.txt is for people after an install; it is no object.
	delete(files, path.Join(c.Name(), "templates", "NOTES.txt"))
	return files, caps, nil
}

// Notes renders the chart's NOTES.txt, what `helm install` prints after
// the install, for the same topology and options as Render.
func Notes(topologyYAML []byte, opts Options) (string, error) {
	c, err := Chart()
	if err != nil {
		return "", err
	}
	vals, err := chartValues(topologyYAML, opts)
	if err != nil {
		return "", err
	}
	caps, release, err := capabilities(c, opts)
	if err != nil {
		return "", err
	}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(c, vals, release, caps, false)
	if err != nil {
		return "", fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(c, rv)
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	return files[path.Join(c.Name(), "templates", "NOTES.txt")], nil
}

// capabilities are the cluster and release `helm template` renders for,
// from opts.
func capabilities(c *chart.Chart, opts Options) (*chartutil.Capabilities, chartutil.ReleaseOptions, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(cmp.Or(opts.KubeVersion, DefaultKubeVersion))
	if err != nil {
		return nil, chartutil.ReleaseOptions{}, fmt.Errorf("kube version %q: %w", opts.KubeVersion, err)
	}
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, opts.APIVersions...)
	if c.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(c.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, chartutil.ReleaseOptions{}, fmt.Errorf("chart requires kubeVersion %s, cluster is %s", c.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	release := chartutil.ReleaseOptions{
		Name:      cmp.Or(opts.ReleaseName, "weft"),
		Namespace: cmp.Or(opts.Namespace, "weft"),
		Revision:  1,
		IsInstall: true,
	}
	return caps, release, nil
}

// generatedLine matches what the chart generates afresh at each render
// when there is no cluster to look the kept Secrets up in (the NATS CA and
// certificates, the API token), and what is derived from them.
var generatedLine = regexp.MustCompile(`(?m)^(\s+(?:ca\.crt|ca\.key|server\.crt|server\.key|client\.crt|client\.key|tls\.crt|tls\.key|token|checksum/tls|weft\.dev/renew-after)): \S+$`)

// WithoutGenerated returns manifest with those generated values replaced
// by <generated>, so that two renders of the same values compare equal.
func WithoutGenerated(manifest string) string {
	return generatedLine.ReplaceAllString(manifest, "$1: <generated>")
}
