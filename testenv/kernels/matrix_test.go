package kernels_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/weftobs/weft/testenv/kernels"
	"golang.org/x/sys/unix"
)

// ───── Expectations: edit here as the collector changes ─────
//
// Every kernel must boot, run the collectors/bpf test binary to its end
// and report its tests' results. Every top-level test must then pass on
// every kernel, except those expectSkip names for a kernel, which must
// skip there (saying what the kernel lacks): a probe the kernel cannot
// give is left off, and its tests skip.
var expectSkip = map[string][]string{
	// No sk_data_ready tracepoint before Linux 6.3: the unix probe is off.
	"bullseye": {"TestUnixConcurrentConnects"},
	"bookworm": {"TestUnixConcurrentConnects"},
}

// notInVM are the tests the VMs do not run: TestVariants runs the suite
// again in the older kernels' variants, which those kernels run natively.
var notInVM = []string{"TestVariants"}

// ───── end of expectations ─────

const (
	bootTimeout = 14 * time.Minute // per kernel: boot, the whole test binary, power off
	testTimeout = "12m"            // the test binary's own -test.timeout in the VM
)

// TestKernelMatrix runs the collectors/bpf tests on each Debian kernel of
// kernels.Debian under qemu and reports a table kernel × test → result;
// with WEFT_KERNEL_MATRIX_OUT it also writes the matrix there as JSON.
// WEFT_KERNELS (comma-separated names) picks kernels, WEFT_KERNEL_TESTS
// is passed to the binary's -test.run, WEFT_KERNEL_CACHE overrides the
// cache directory and WEFT_KERNELS_REFRESH=1 fetches the newest kernels
// again (a cached kernel is otherwise used as it is).
func TestKernelMatrix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the kernel matrix runs with the eBPF tests, as root (CI runs as root)")
	}
	if testing.Short() {
		t.Skip("skipping in -short: boots every kernel under qemu (minutes)")
	}
	ci := os.Getenv("CI") == "true"
	missing := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf(format+" (CI installs it in .ci/run)", args...)
		}
		t.Skipf("skipping: "+format, args...)
	}
	for tool, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static", "apt-get": "apt", "dpkg-deb": "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing("needs %s (Debian package %s)", tool, pkg)
		}
	}
	if _, err := os.Stat(kernels.Keyring); err != nil {
		missing("needs Debian's archive keyring %s (package debian-archive-keyring)", kernels.Keyring)
	}

	cache := os.Getenv("WEFT_KERNEL_CACHE")
	if cache == "" {
		var err error
		if cache, err = kernels.DefaultCacheDir(); err != nil {
			t.Fatal(err)
		}
	}
	dists := kernels.Debian
	if names := os.Getenv("WEFT_KERNELS"); names != "" {
		dists = nil
		for _, d := range kernels.Debian {
			if slices.Contains(strings.Split(names, ","), d.Name) {
				dists = append(dists, d)
			}
		}
		if len(dists) == 0 {
			t.Fatalf("WEFT_KERNELS=%s names none of the kernels", names)
		}
	}
	ctx := t.Context()
	start := time.Now()
	ks, err := kernels.Fetch(ctx, cache, kernels.FetchOptions{Refresh: os.Getenv("WEFT_KERNELS_REFRESH") == "1"}, dists...)
	if err != nil {
		missing("fetch kernels (network, the host's apt sources): %v", err)
	}
	t.Logf("kernels ready in %s (cache %s)", time.Since(start).Round(100*time.Millisecond), cache)

	bin, tests := buildTests(t, "github.com/weftobs/weft/collectors/bpf")
	// TestVariants runs the suite again in the older kernels' variants:
	// on those kernels it runs natively, so not in the VMs.
	args := []string{"-test.v", "-test.count=1", "-test.timeout", testTimeout, "-test.skip", "^(" + strings.Join(notInVM, "|") + ")$"}
	if run := os.Getenv("WEFT_KERNEL_TESTS"); run != "" {
		args = append(args, "-test.run", run)
		tests = listTests(t, bin, run)
	}
	logDir := filepath.Join(os.TempDir(), "weft-kernels")

	m := matrix{Host: hostRelease(t), Tests: tests}
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, bootTimeout)
			defer cancel()
			// One vCPU: under TCG, a second one sometimes sees a kernel
			// text patch half done (tracepoints are static keys, patched
			// at attach and detach) and the guest oopses on the int3
			// (seen once in TestPauseResume on 6.12); races still run,
			// by preemption and interrupts.
			res, err := kernels.Boot(ctx, k, kernels.BootOptions{LogDir: logDir, HostTools: []string{"bash"}, CPUs: 1},
				kernels.Binary{Name: "bpf.test", Path: bin, Args: args})
			m.add(res, err)
			if err != nil {
				t.Fatal(err) // names the console log
			}
			run := res.Runs[0]
			if run.ExitCode < 0 || len(run.Tests) == 0 {
				t.Fatalf("%s: the test binary reported no results (exit %d); console log %s", k.Name, run.ExitCode, res.Console)
			}
			if failed := slices.ContainsFunc(run.Tests, func(r kernels.TestResult) bool { return r.Status == kernels.Fail }); failed == (run.ExitCode == 0) {
				t.Errorf("%s: exit code %d does not match the parsed results; console log %s", k.Name, run.ExitCode, res.Console)
			}
			for _, name := range tests {
				if slices.Contains(notInVM, name) {
					continue
				}
				want := kernels.Pass
				if slices.Contains(expectSkip[k.Name], name) {
					want = kernels.Skip
				}
				if r, ok := run.Test(name); !ok || r.Status != want {
					t.Errorf("%s: %s must %s, got %s; console log %s", k.Name, name, strings.ToLower(string(want)), cell(r, ok), res.Console)
				}
			}
			logFailures(t, k.Name, run.Tests)
		})
	}
	t.Logf("kernel matrix (collectors/bpf):\n%s", m.table())
	if out := os.Getenv("WEFT_KERNEL_MATRIX_OUT"); out != "" {
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}
}

var testFileLine = regexp.MustCompile(`^\S+_test\.go:\d+: `)

// logFailures logs why tests failed, once for all the tests that failed
// with the same first line (when a program does not load, every test
// says so). A parent whose subtests failed says nothing itself.
func logFailures(t *testing.T, kernel string, results []kernels.TestResult) {
	t.Helper()
	var reasons []string
	byReason := map[string][]string{}
	for _, r := range results {
		if r.Status != kernels.Fail || len(r.Output) == 0 {
			continue
		}
		// Without the file:line prefixes, which differ per test.
		var lines []string
		for _, l := range firstLines(r.Output, 8) {
			lines = append(lines, testFileLine.ReplaceAllString(l, ""))
		}
		reason := strings.Join(lines, "\n\t")
		if byReason[reason] == nil {
			reasons = append(reasons, reason)
		}
		byReason[reason] = append(byReason[reason], r.Name)
	}
	for _, reason := range reasons {
		t.Logf("%s: FAIL %s:\n\t%s", kernel, strings.Join(byReason[reason], ", "), reason)
	}
}

// buildTests builds pkg's test binary statically (the VM has no libc) and
// lists its top-level tests.
func buildTests(t *testing.T, pkg string) (bin string, tests []string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "bpf.test")
	cmd := exec.Command("go", "test", "-c", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s tests: %v\n%s", pkg, err, out)
	}
	return bin, listTests(t, bin, ".")
}

func listTests(t *testing.T, bin, run string) []string {
	out, err := exec.Command(bin, "-test.list", run).Output()
	if err != nil {
		t.Fatalf("%s -test.list: %v", bin, err)
	}
	return strings.Fields(string(out))
}

func hostRelease(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// matrix is the JSON summary (WEFT_KERNEL_MATRIX_OUT).
type matrix struct {
	Host    string   `json:"host_release"` // collectors/bpf runs on it in the normal go test
	Tests   []string `json:"tests"`
	Kernels []row    `json:"kernels"`
}

type row struct {
	Name        string            `json:"name"`
	Package     string            `json:"package"`
	Version     string            `json:"version"`
	Release     string            `json:"release"`
	BootSeconds float64           `json:"boot_seconds"`
	RunSeconds  float64           `json:"run_seconds"`
	ExitCode    int               `json:"exit_code"`
	Error       string            `json:"error,omitempty"`
	Console     string            `json:"console"`
	Results     map[string]string `json:"results"` // test (and subtest) → PASS, FAIL, SKIP
	Failures    map[string]string `json:"failures,omitempty"`
	// HookNs is each hook's cost per run (TestHookCost), in ns under
	// emulation: compare kernels by ratio only.
	HookNs map[string]float64 `json:"hook_ns_per_run,omitempty"`
	// Collector is how the collector fitted this kernel (TestVariantIs).
	Collector string `json:"collector,omitempty"`
}

var (
	hookCostLine  = regexp.MustCompile(`hook-cost (\S+) (\d+) ns/run`)
	collectorLine = regexp.MustCompile(`kernel \S+: (object \S+, casts \S+, sweep \S+)`)
)

func (m *matrix) add(res kernels.Result, err error) {
	r := row{
		Name: res.Kernel.Name, Package: res.Kernel.Package, Version: res.Kernel.Version, Release: res.Release,
		BootSeconds: res.Booted.Seconds(), ExitCode: -1, Console: res.Console, Results: map[string]string{},
	}
	if err != nil {
		r.Error = err.Error()
	}
	if len(res.Runs) > 0 {
		run := res.Runs[0]
		r.RunSeconds, r.ExitCode = run.Duration.Seconds(), run.ExitCode
		for _, tr := range run.Tests {
			r.Results[tr.Name] = string(tr.Status)
			for _, l := range tr.Output {
				if m := hookCostLine.FindStringSubmatch(l); m != nil {
					if r.HookNs == nil {
						r.HookNs = map[string]float64{}
					}
					var ns float64
					fmt.Sscan(m[2], &ns)
					r.HookNs[m[1]] = ns
				}
				if m := collectorLine.FindStringSubmatch(l); m != nil {
					r.Collector = m[1]
				}
			}
			if tr.Status == kernels.Fail {
				if r.Failures == nil {
					r.Failures = map[string]string{}
				}
				r.Failures[tr.Name] = strings.Join(firstLines(tr.Output, 20), "\n")
			}
		}
	}
	m.Kernels = append(m.Kernels, r)
}

// table renders the kernels and then test × kernel → result.
func (m *matrix) table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "kernel\trelease\tpackage version\tboot\trun\texit\tcollector")
	fmt.Fprintf(w, "host\t%s\t-\t-\t-\t(runs in go test ./collectors/bpf)\t\n", m.Host)
	for _, r := range m.Kernels {
		fmt.Fprintf(w, "%s\t%s\t%s\t%.0fs\t%.0fs\t%d\t%s\n", r.Name, r.Release, r.Version, r.BootSeconds, r.RunSeconds, r.ExitCode, r.Collector)
	}
	w.Flush()
	// Hook costs, as ratios to the last kernel's (the newest).
	if n := len(m.Kernels); n > 0 && m.Kernels[n-1].HookNs != nil {
		newest := m.Kernels[n-1]
		b.WriteString("\nhook cost per run, ÷ " + newest.Name + "'s (same run, under emulation)\n")
		w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprint(w, "hook")
		for _, r := range m.Kernels {
			fmt.Fprintf(w, "\t%s", r.Name)
		}
		fmt.Fprintln(w)
		hooks := make([]string, 0, len(newest.HookNs))
		for h := range newest.HookNs {
			hooks = append(hooks, h)
		}
		slices.Sort(hooks)
		for _, h := range hooks {
			fmt.Fprint(w, h)
			for _, r := range m.Kernels {
				if ns, ok := r.HookNs[h]; ok {
					fmt.Fprintf(w, "\t%.2f (%.0f ns)", ns/newest.HookNs[h], ns)
				} else {
					fmt.Fprint(w, "\t-")
				}
			}
			fmt.Fprintln(w)
		}
		w.Flush()
	}
	b.WriteString("\n")
	w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "test")
	for _, r := range m.Kernels {
		fmt.Fprintf(w, "\t%s", r.Name)
	}
	fmt.Fprintln(w)
	for _, name := range m.Tests {
		fmt.Fprint(w, name)
		for _, r := range m.Kernels {
			s, ok := r.Results[name]
			if !ok {
				s = "-"
			}
			fmt.Fprintf(w, "\t%s", s)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return b.String()
}

func cell(r kernels.TestResult, ok bool) string {
	if !ok {
		return "no result"
	}
	return string(r.Status)
}

func firstLines(lines []string, n int) []string {
	if len(lines) > n {
		return append(lines[:n:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return lines
}
