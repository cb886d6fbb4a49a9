package kernels

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHostMirrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  Mirrors
	}{
		{"deb822 with another vendor first", map[string]string{
			"sources.list.d/vendor.sources": "Types: deb\nURIs: http://vendor.invalid/apt\nSuites: nodistro\nComponents: main\n",
			"sources.list.d/debian.sources": "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
				"Types: deb\nURIs: http://mirror.invalid/debian-security/\nSuites: bookworm-security\nComponents: main\n",
		}, Mirrors{"http://mirror.invalid/debian", "http://mirror.invalid/debian-security"}},
		{"one-line with options; disabled entries ignored", map[string]string{
			"sources.list": "# deb http://old.invalid/debian bookworm main\n" +
				"deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian/ trixie main\n" +
				"deb-src http://src.invalid/debian trixie main\n",
			"sources.list.d/sec.list":           "deb http://sec.invalid/debian-security trixie-security main contrib\n",
			"sources.list.d/off.sources":        "Enabled: no\nTypes: deb\nURIs: http://off.invalid/debian\nSuites: trixie-security\n",
			"sources.list.d/x.list.disabled-by": "deb http://ignored.invalid/debian trixie-security main\n",
		}, Mirrors{"http://mirror.invalid/debian", "http://sec.invalid/debian-security"}},
		{"the old security layout", map[string]string{
			"sources.list": "deb http://mirror.invalid/debian buster main\ndeb http://sec.invalid buster/updates main\n",
		}, Mirrors{"http://mirror.invalid/debian", "http://sec.invalid"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, content := range tt.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := HostMirrors(dir)
			if err != nil || got != tt.want {
				t.Errorf("HostMirrors: %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := HostMirrors(t.TempDir()); err == nil {
		t.Error("HostMirrors of no sources: no error")
	}
}
