package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"gopkg.in/yaml.v3"

	"github.com/weftobs/weft/charts"
)

// The image's user: the chart's pods run as this uid and gid (its
// restricted security contexts), and so does a plain `docker run`.
const (
	UID  = 65532
	Home = "/home/nonroot"
	// BinaryPath is where the binary is; its directory is on PATH, so the
	// chart's command [weft] finds it.
	BinaryPath = "/usr/local/bin/weft"
)

// Options say what goes into the image.
type Options struct {
	// Binary is a static weft binary for linux (CGO_ENABLED=0).
	Binary string
	// Arch is the binary's architecture (GOARCH); default amd64.
	Arch string
	// Reference is the image reference (repository:tag) recorded in the
	// layout's index; default DefaultReference.
	Reference string
	// Version is the org.opencontainers.image.version label; default the
	// chart's appVersion.
	Version string
	// Docs are files put under /usr/share/doc/weft (LICENSE, NOTICE).
	Docs map[string][]byte
}

// Chart is what the image takes from the chart: its default repository
// and appVersion.
type Chart struct {
	Repository string
	AppVersion string
}

// ChartDefaults reads the chart's default image repository and its
// appVersion (the default tag).
func ChartDefaults() (Chart, error) {
	var meta struct {
		AppVersion string `yaml:"appVersion"`
	}
	var vals struct {
		Image struct {
			Repository string `yaml:"repository"`
		} `yaml:"image"`
	}
	for name, v := range map[string]any{"Chart.yaml": &meta, "values.yaml": &vals} {
		data, err := charts.FS.ReadFile(path.Join(charts.ChartDir, name))
		if err != nil {
			return Chart{}, fmt.Errorf("read chart %s: %w", name, err)
		}
		if err := yaml.Unmarshal(data, v); err != nil {
			return Chart{}, fmt.Errorf("decode chart %s: %w", name, err)
		}
	}
	if meta.AppVersion == "" || vals.Image.Repository == "" {
		return Chart{}, fmt.Errorf("the chart names no appVersion or image.repository")
	}
	return Chart{Repository: vals.Image.Repository, AppVersion: meta.AppVersion}, nil
}

// Reference is the image the chart deploys when its values name none.
func (c Chart) Reference() string { return c.Repository + ":" + c.AppVersion }

// Write writes the image as an OCI image layout into dir (created if
// missing, and which must not hold another layout) and returns the
// image's manifest digest.
func Write(dir string, o Options) (v1.Hash, error) {
	ch, err := ChartDefaults()
	if err != nil {
		return v1.Hash{}, err
	}
	if o.Reference == "" {
		o.Reference = ch.Reference()
	}
	if o.Version == "" {
		o.Version = ch.AppVersion
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read weft binary: %w", err)
	}
	fsTar, err := rootFS(bin, o.Docs)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(fsTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS:           "linux",
		Architecture: o.Arch,
		Config: v1.Config{
			Entrypoint: []string{BinaryPath},
			User:       fmt.Sprintf("%d:%d", UID, UID),
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + Home},
			WorkingDir: Home,
			Labels: map[string]string{
				"org.opencontainers.image.title":    "weft",
				"org.opencontainers.image.version":  o.Version,
				"org.opencontainers.image.licenses": "Apache-2.0",
				"org.opencontainers.image.source":   "https://github.com/weftobs/weft",
			},
		},
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image layer: %w", err)
	}
	// A fixed creation time: the same binary gives the same image digest.
	img, err = mutate.CreatedAt(img, v1.Time{Time: time.Unix(0, 0).UTC()})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image time: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image layout %s: %w", dir, err)
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": o.Reference}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: o.Arch}))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image to %s: %w", dir, err)
	}
	return img.Digest()
}

// rootFS is the image's one layer: the binary, a passwd and group naming
// its user, that user's home, /tmp, and the docs.
func rootFS(bin []byte, docs map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", UID, UID, Home)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", UID)
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir(Home[1:], 0o700, UID) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/local", 0o755, 0) },
		func() error { return dir("usr/local/bin", 0o755, 0) },
		func() error { return file(BinaryPath[1:], 0o755, bin) },
		func() error { return dir("usr/share", 0o755, 0) },
		func() error { return dir("usr/share/doc", 0o755, 0) },
		func() error { return dir("usr/share/doc/weft", 0o755, 0) },
	}
	for _, name := range sortedKeys(docs) {
		steps = append(steps, func() error { return file("usr/share/doc/weft/"+name, 0o644, docs[name]) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("image filesystem: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image filesystem: %w", err)
	}
	return buf.Bytes(), nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// BuildBinary builds the weft binary for the image with the go command:
// static (CGO_ENABLED=0), for linux/arch, with `weft version` printing
// version. It must run inside the weft module.
func BuildBinary(out, version, arch string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "github.com/weftobs/weft/cmd/weft")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build weft for the image: %w\n%s", err, b)
	}
	return nil
}
