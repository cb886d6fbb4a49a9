package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNotice: every module linked into the binary that ships a NOTICE file
// is named in the repository's NOTICE (Apache-2.0 section 4(d) asks that
// those notices travel with the binary).
func TestNotice(t *testing.T) {
	notice, err := os.ReadFile("../../NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}} {{.Dir}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		path, dir, ok := strings.Cut(sc.Text(), " ")
		if !ok || seen[path] || path == "github.com/weftobs/weft" {
			continue
		}
		seen[path] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("module %s: %v", path, err)
		}
		for _, e := range entries {
			if strings.HasPrefix(strings.ToUpper(e.Name()), "NOTICE") && !bytes.Contains(notice, []byte(path)) {
				t.Errorf("module %s ships %s; NOTICE does not name it", path, filepath.Join(dir, e.Name()))
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("go list named only %d modules", len(seen))
	}
}
