package kernels

import (
	"bytes"
	"compress/gzip"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A console as the VM prints it: firmware noise, kernel messages, the
// markers, go test -v with subtests, a parallel test's output, a failure.
const console = "\x1bc\x1b[?7lSeaBIOS (version 1.16.2)\r\nBooting from ROM...\r\n" +
	"[    1.234] random: crng init done\r\n" +
	"@@weft:kernel 6.1.0-57-amd64\r\n" +
	"@@weft:begin bpf.test\r\n" +
	"=== RUN   TestA\r\n" +
	"=== RUN   TestA/sub_1\r\n" +
	"    probes_test.go:10: load program: permission denied:\r\n" +
	"    probes_test.go:10: \t123: (85) call bpf_get_socket_cookie#46\r\n" +
	"=== RUN   TestA/sub_2\r\n" +
	"--- FAIL: TestA (0.50s)\r\n" +
	"    --- FAIL: TestA/sub_1 (0.25s)\r\n" +
	"    --- PASS: TestA/sub_2 (0.25s)\r\n" +
	"=== RUN   TestB\r\n" +
	"    probes_test.go:31: skipping: no tcp6\r\n" +
	"--- SKIP: TestB (0.00s)\r\n" +
	"=== RUN   TestC\r\n" +
	"--- PASS: TestC (1.00s)\r\n" +
	"FAIL\r\n" +
	"@@weft:end bpf.test 1\r\n" +
	"@@weft:begin other.test\r\n" +
	"=== RUN   TestD\r\n" +
	"[   30.000] Kernel panic - not syncing: oops\r\n"

func TestParseConsole(t *testing.T) {
	var res Result
	parseConsole(strings.NewReader(console), &res, time.Now())
	if res.Release != "6.1.0-57-amd64" || res.Done {
		t.Errorf("release %q done %v, want 6.1.0-57-amd64 and not done", res.Release, res.Done)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want 2: %+v", len(res.Runs), res.Runs)
	}
	run := res.Runs[0]
	if run.Binary != "bpf.test" || run.ExitCode != 1 {
		t.Errorf("run %s exit %d, want bpf.test exit 1", run.Binary, run.ExitCode)
	}
	want := map[string]Status{"TestA": Fail, "TestA/sub_1": Fail, "TestA/sub_2": Pass, "TestB": Skip, "TestC": Pass}
	for name, st := range want {
		if r, ok := run.Test(name); !ok || r.Status != st {
			t.Errorf("%s: %+v (found %v), want %s", name, r, ok, st)
		}
	}
	if len(run.Tests) != len(want) {
		t.Errorf("%d results, want %d: %+v", len(run.Tests), len(want), run.Tests)
	}
	if r, _ := run.Test("TestA/sub_1"); len(r.Output) != 2 || !strings.Contains(r.Output[1], "bpf_get_socket_cookie") {
		t.Errorf("TestA/sub_1 output %q, want the verifier's two lines", r.Output)
	}
	if r, _ := run.Test("TestC"); r.Elapsed != time.Second {
		t.Errorf("TestC elapsed %s, want 1s", r.Elapsed)
	}
	if second := res.Runs[1]; second.Binary != "other.test" || second.ExitCode != -1 || len(second.Tests) != 0 {
		t.Errorf("second run %+v, want other.test that did not end", second)
	}
}

// TestInitramfs: the archive is one the cpio tool (and so the kernel)
// reads, with the device nodes, /init and a host tool's libraries.
func TestInitramfs(t *testing.T) {
	for _, tool := range []string{"cpio", "busybox", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: needs %s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "x.test")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "initramfs.cpio.gz")
	if err := buildInitramfs(dst, BootOptions{HostTools: []string{"bash"}}, []Binary{{Name: "x.test", Path: bin, Args: []string{"-test.run", "it's"}}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = zr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -itv: %v", err)
	}
	listing := map[string]string{} // path → mode column
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		listing[f[len(f)-1]] = f[0]
	}
	for p, mode := range map[string]string{
		"init": "-rwxr-xr-x", "bin/busybox": "-rwxr-xr-x", "opt/weft/x.test": "-rwxr-xr-x",
		"dev/console": "crw-------", "usr/bin/bash": "-rwxr-xr-x", "opt": "drwxr-xr-x",
	} {
		if listing[p] != mode {
			t.Errorf("%s: mode %q, want %q", p, listing[p], mode)
		}
	}
	if !slices.ContainsFunc(slices.Collect(maps.Keys(listing)), func(p string) bool { return strings.Contains(p, "libc.so") }) {
		t.Errorf("no libc for bash in %v", listing)
	}
	var init bytes.Buffer
	init.WriteString(initScript([]Binary{{Name: "x.test", Args: []string{"it's"}}}))
	if !strings.Contains(init.String(), `'/opt/weft/x.test' 'it'\''s'`) {
		t.Errorf("init does not quote the arguments:\n%s", init.String())
	}
}
