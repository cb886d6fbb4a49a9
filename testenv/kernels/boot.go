package kernels

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary is a statically linked program to run in the VM, typically a Go
// test binary (`CGO_ENABLED=0 go test -c`). It runs as root in /tmp (a
// tmpfs), in the order given, with its output on the serial console.
type Binary struct {
	Name string   // its name in the VM (/opt/weft/<Name>) and in Results
	Path string   // the file on the host
	Args []string // e.g. -test.v -test.timeout 5m: without -test.v no test results are parsed
}

// BootOptions tune Boot; the zero value is usable.
type BootOptions struct {
	Memory    string   // qemu -m; default 2G
	CPUs      int      // qemu -smp; default 2
	LogDir    string   // where the console log is kept; default os.TempDir()
	HostTools []string // host executables to put in the VM with their shared libraries, e.g. "bash"
	Append    string   // more kernel command line
	Qemu      string   // default qemu-system-x86_64
}

// Result is what one boot of a kernel did.
type Result struct {
	Kernel   Kernel
	Release  string        // `uname -r` inside the VM
	Console  string        // path of the full serial console log
	Booted   time.Duration // from starting qemu to the VM's init running
	Duration time.Duration // from starting qemu to its exit
	Runs     []Run         // one per Binary that began
	Done     bool          // every binary ran and the VM powered off
}

// Run is one binary's run in the VM.
type Run struct {
	Binary   string
	ExitCode int           // -1 when it did not end (the VM died or timed out)
	Duration time.Duration // measured on the host between its console markers
	Tests    []TestResult  // from its `go test -v` lines, in the order they ended
}

// Status is a test's outcome.
type Status string

// The outcomes `go test -v` prints.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// TestResult is one test (or subtest, named "Parent/sub") of a Run.
type TestResult struct {
	Name    string
	Status  Status
	Elapsed time.Duration
	Output  []string // what it logged (for a failure: the verifier's complaint, say), at most maxOutput lines
}

const maxOutput = 200

// Test returns the result of the named test in the run, if it ended.
func (r Run) Test(name string) (TestResult, bool) {
	for _, t := range r.Tests {
		if t.Name == name {
			return t, true
		}
	}
	return TestResult{}, false
}

// marker starts every line the VM's /init prints about its own progress.
const marker = "@@weft:"

// Boot starts kernel k under qemu (TCG) with an initramfs holding busybox,
// opts.HostTools and bins, runs each binary, and returns what they did.
// ctx bounds the whole boot: when it is done qemu is killed. qemu is
// always gone when Boot returns, and so is the initramfs; the console log
// is kept (its path is in Result.Console and in any error). An error means
// the VM did not run every binary to its end and power off; the Result
// still holds what was seen.
func Boot(ctx context.Context, k Kernel, opts BootOptions, bins ...Binary) (Result, error) {
	res := Result{Kernel: k}
	if opts.Memory == "" {
		opts.Memory = "2G"
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
	}
	if opts.Qemu == "" {
		opts.Qemu = "qemu-system-x86_64"
	}
	if opts.LogDir == "" {
		opts.LogDir = os.TempDir()
	}
	qemu, err := exec.LookPath(opts.Qemu)
	if err != nil {
		return res, fmt.Errorf("boot %s: %w (Debian package qemu-system-x86)", k.Name, err)
	}
	work, err := os.MkdirTemp("", "weft-kernel-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initramfs.cpio.gz")
	if err := buildInitramfs(initrd, opts, bins); err != nil {
		return res, fmt.Errorf("boot %s: %w", k.Name, err)
	}
	if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return res, err
	}
	logf, err := os.CreateTemp(opts.LogDir, fmt.Sprintf("console-%s-%s-*.log", k.Name, time.Now().Format("20060102-150405")))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	res.Console = logf.Name()

	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-cpu", "max", "-m", opts.Memory, "-smp", strconv.Itoa(opts.CPUs),
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 oops=panic quiet loglevel=3 "+opts.Append),
	)
	// qemu dies with this process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	cmd.Stderr = logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("boot %s: start qemu: %w", k.Name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		parseConsole(io.TeeReader(stdout, logf), &res, start)
	}()
	wg.Wait() // stdout ends when qemu exits (or is killed)
	waitErr := cmd.Wait()
	res.Duration = time.Since(start)

	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("boot %s: %w after %s; console log %s", k.Name, ctx.Err(), res.Duration.Round(time.Second), res.Console)
	case !res.Done:
		return res, fmt.Errorf("boot %s: the VM stopped before running every binary (qemu: %v); console log %s", k.Name, waitErr, res.Console)
	case waitErr != nil:
		return res, fmt.Errorf("boot %s: qemu: %w; console log %s", k.Name, waitErr, res.Console)
	}
	return res, nil
}

func buildInitramfs(dst string, opts BootOptions, bins []Binary) error {
	r := newInitramfs()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("%w (Debian package busybox-static)", err)
	}
	if err := r.hostExecutable("bin/busybox", busybox); err != nil {
		return err
	}
	for _, t := range opts.HostTools {
		p, err := exec.LookPath(t)
		if err != nil {
			return err
		}
		if err := r.hostExecutable(filepath.Join("usr/bin", filepath.Base(p)), p); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "etc", "sbin", "usr/sbin"} {
		r.dir(d)
	}
	r.charDev("dev/console", 5, 1)
	r.charDev("dev/null", 1, 3)
	r.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	r.file("etc/group", []byte("root:x:0:\n"), 0o644)
	for _, b := range bins {
		if strings.ContainsAny(b.Name, "/ \t\n'") || b.Name == "" {
			return fmt.Errorf("binary name %q: want a plain file name", b.Name)
		}
		r.hostFile(filepath.Join("opt/weft", b.Name), b.Path, 0o755)
	}
	r.file("init", []byte(initScript(bins)), 0o755)

	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := r.writeTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs: %w", err)
	}
	return f.Close()
}

// initScript is the VM's /init: mount what eBPF programs and their tests
// use, run each binary between markers, power off.
func initScript(bins []Binary) string {
	var s strings.Builder
	s.WriteString(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
ulimit -l unlimited
echo "` + marker + `kernel $(uname -r)"
cd /tmp
`)
	for _, b := range bins {
		args := []string{shellQuote("/opt/weft/" + b.Name)}
		for _, a := range b.Args {
			args = append(args, shellQuote(a))
		}
		fmt.Fprintf(&s, "echo '%sbegin %s'\n%s\necho \"%send %s $?\"\n", marker, b.Name, strings.Join(args, " "), marker, b.Name)
	}
	s.WriteString(`echo "` + marker + `done"
sync
poweroff -f
`)
	return s.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var (
	testEnd   = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	testStart = regexp.MustCompile(`^=== (RUN|CONT|NAME|PAUSE)\s+(\S+)`)
)

// parseConsole reads the serial console until it ends, filling res.
func parseConsole(r io.Reader, res *Result, start time.Time) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var (
		run      *Run
		runStart time.Time
		current  string
		output   = map[string][]string{}
	)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, marker); i >= 0 {
			f := strings.Fields(line[i+len(marker):])
			switch {
			case len(f) == 2 && f[0] == "kernel":
				res.Release = f[1]
				res.Booted = time.Since(start)
			case len(f) == 2 && f[0] == "begin":
				res.Runs = append(res.Runs, Run{Binary: f[1], ExitCode: -1})
				run, runStart, current, output = &res.Runs[len(res.Runs)-1], time.Now(), "", map[string][]string{}
			case len(f) == 3 && f[0] == "end" && run != nil:
				run.ExitCode, _ = strconv.Atoi(f[2])
				run.Duration = time.Since(runStart)
				run = nil
			case len(f) == 1 && f[0] == "done":
				res.Done = true
			}
			continue
		}
		if run == nil {
			continue
		}
		if m := testStart.FindStringSubmatch(line); m != nil {
			current = m[2]
			continue
		}
		if m := testEnd.FindStringSubmatch(line); m != nil {
			secs, _ := strconv.ParseFloat(m[3], 64)
			run.Tests = append(run.Tests, TestResult{
				Name: m[2], Status: Status(m[1]),
				Elapsed: time.Duration(secs * float64(time.Second)),
				Output:  output[m[2]],
			})
			current = m[2] // what follows a subtest's end belongs to its parent, as go test prints it
			if j := strings.LastIndex(current, "/"); j >= 0 {
				current = current[:j]
			}
			continue
		}
		if current != "" && len(output[current]) < maxOutput && strings.TrimSpace(line) != "" {
			output[current] = append(output[current], strings.TrimSpace(line))
		}
	}
}
