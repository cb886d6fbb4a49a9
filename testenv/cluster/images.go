package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Images the cluster always has, made from Debian's static busybox: no
// registry is ever asked for an image (pods use imagePullPolicy: Never).
const (
	// BusyboxImage has /bin/busybox and its applets on PATH (sh, nc,
	// sleep, …); the test workloads run on it.
	BusyboxImage = "weft.local/busybox:1"
	// PauseImage is the pod sandbox image: busybox sleeping for ever.
	PauseImage = "weft.local/pause:1"
)

// busyboxApplets are linked to /bin/busybox in BusyboxImage.
var busyboxApplets = []string{"sh", "nc", "sleep", "echo", "cat", "wc", "date", "ls", "rm", "mkdir", "seq", "head", "tail", "grep", "sed", "awk", "tr", "printf", "env", "true", "false", "test", "kill", "hostname", "id", "dd", "timeout", "expr"}

// busyboxImage is one layer with busybox and its applets, then cmd.
func busyboxImage(busybox string, entrypoint []string) (v1.Image, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox (Debian's busybox-static): %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755, ModTime: epoch},
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755, ModTime: epoch},
		{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: epoch},
		{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: epoch},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for name, data := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnobody:x:65534:\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64",
		Config: v1.Config{Entrypoint: entrypoint, Env: []string{"PATH=/bin"}},
	})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layer)
}

// normalizeRef is ref as containerd's CRI names it: a reference without a
// registry is Docker Hub's (docker.io/library/ for a single name).
func normalizeRef(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return ref
	}
	if !ok {
		return "docker.io/library/" + ref
	}
	return "docker.io/" + ref
}

// LoadBinaryImage loads an image of busybox plus one static binary at
// /bin/NAME (its entrypoint) as ref: how the chart's NATS runs here, from
// the nats-server module weft already depends on.
func (c *Cluster) LoadBinaryImage(ctx context.Context, ref, binary string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	name := filepath.Base(binary)
	img, err := busyboxImage(busybox, []string{"/bin/" + name})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/" + name, Mode: 0o755, Size: int64(len(bin)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return err
	}
	return c.importImage(ctx, ref, img)
}

// importImage loads img into containerd's k8s.io namespace as ref, through
// an OCI archive that ctr imports.
func (c *Cluster) importImage(ctx context.Context, ref string, img v1.Image) error {
	ref = normalizeRef(ref)
	dir, err := os.MkdirTemp(c.Dir, "image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	archive := filepath.Join(dir, "image.tar")
	if err := tarDir(filepath.Join(dir, "layout"), archive); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.containerdSock(), "-n", "k8s.io", "images", "import", "--all-platforms", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", ref, err, out)
	}
	return nil
}

// ImportLayout loads the image of an OCI image layout (such as the one
// `task image` writes in bin/image) as ref.
func (c *Cluster) ImportLayout(ctx context.Context, dir, ref string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("read image layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return fmt.Errorf("read image layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) == 0 {
		return fmt.Errorf("image layout %s holds no image (%v)", dir, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	return c.importImage(ctx, ref, img)
}

func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return tw.Close()
}
