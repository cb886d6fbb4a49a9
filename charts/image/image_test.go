package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/weftobs/weft/charts/render"
)

// TestImage builds the image from a fresh weft build, reads the layout
// back, checks its config and reference against the chart, and runs
// `weft version` from the image's own filesystem as the image's user.
func TestImage(t *testing.T) {
	ch, err := ChartDefaults()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "weft")
	if err := BuildBinary(bin, ch.AppVersion, "amd64"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	digest, err := Write(dir, Options{Binary: bin, Docs: map[string][]byte{"NOTICE": []byte("n\n")}})
	if err != nil {
		t.Fatal(err)
	}

	// The chart's default image is the one in the layout.
	rendered, err := render.Render(nil, render.Options{Values: map[string]any{"layout": "daemonset", "neo4j": map[string]any{"uri": "bolt://neo4j:7687", "password": "test-password"}, "otlp": map[string]any{"endpoint": "http://otel:4318"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rendered, "image: "+ch.Reference()+"\n") {
		t.Fatalf("the chart does not deploy %s", ch.Reference())
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != digest {
		t.Fatalf("index %+v, want the one image %s", im.Manifests, digest)
	}
	if ref := im.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != ch.Reference() {
		t.Errorf("reference %q, the chart deploys %q", ref, ch.Reference())
	}
	img, err := idx.Image(digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if strings.Join(c.Entrypoint, " ") != BinaryPath || c.User != "65532:65532" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("entrypoint %q user %q platform %s/%s", c.Entrypoint, c.User, cf.OS, cf.Architecture)
	}
	for k, want := range map[string]string{"org.opencontainers.image.version": ch.AppVersion, "org.opencontainers.image.licenses": "Apache-2.0", "org.opencontainers.image.title": "weft"} {
		if c.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
		}
	}
	if !strings.Contains(strings.Join(c.Env, " "), "PATH=/usr/local/bin") {
		t.Errorf("env %q: the chart's command [weft] needs /usr/local/bin on PATH", c.Env)
	}

	// The filesystem, extracted as a runtime would.
	rootfs := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(rootfs, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
				t.Fatal(err)
			}
			mode := os.FileMode(h.Mode).Perm()
			if h.Mode&0o1000 != 0 {
				mode |= os.ModeSticky
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
					t.Fatal(err)
				}
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "usr/share/doc/weft/NOTICE")); err != nil || string(b) != "n\n" {
		t.Errorf("NOTICE in the image: %q %v", b, err)
	}

	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// In the image's filesystem alone, as its user: a binary that
		// needed a shared library or root would fail here.
		cmd = exec.Command(BinaryPath, "version")
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: UID, Gid: UID}}
		cmd.Dir = "/"
		cmd.Env = c.Env
	} else {
		t.Log("not root: weft version runs from the extracted filesystem, without chroot")
		cmd = exec.Command(filepath.Join(rootfs, BinaryPath), "version")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("weft version in the image: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "weft "+ch.AppVersion; got != want {
		t.Errorf("weft version in the image says %q, want %q", got, want)
	}
}
