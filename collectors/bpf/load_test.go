package bpf

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// loadedNames are the names of c's loaded programs (the kernel keeps 15
// characters of each).
func loadedNames(t *testing.T, c *Collector) []string {
	t.Helper()
	var names []string
	for _, id := range c.ProgramIDs() {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, info.Name)
	}
	slices.Sort(names)
	return names
}

func trimmed(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n[:min(len(n), 15)]
	}
	slices.Sort(out)
	return out
}

// TestProbesLoadOnlyTheirPrograms: a probe left out of the configuration
// loads nothing into the kernel, so a kernel that would refuse its
// programs does not stop the others.
func TestProbesLoadOnlyTheirPrograms(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		probes []Probe
		want   []string
	}{
		{[]Probe{ProbeProcess}, []string{"handle_exec", "handle_exit"}},
		{[]Probe{ProbeTCP}, []string{"handle_set_state", "scan_files", "scan_tcp"}},
		{[]Probe{ProbeUnix}, []string{"handle_data_ready"}},
	} {
		t.Run(string(tc.probes[0]), func(t *testing.T) {
			c := openProbes(t, tc.probes...)
			want := tc.want
			if slices.Contains(tc.probes, ProbeTCP) {
				// and the one sweep this kernel takes
				switch {
				case c.objs.SweepRun != nil:
					want = append(want, "sweep_run")
				case c.objs.SweepSocks != nil:
					want = append(want, "sweep_socks")
				}
			}
			if got := loadedNames(t, c); !slices.Equal(trimmed(got...), trimmed(want...)) {
				t.Errorf("probes %v loaded %v, want %v", tc.probes, got, want)
			}
			if !slices.Equal(c.Probes(), tc.probes) {
				t.Errorf("Probes() = %v, want %v", c.Probes(), tc.probes)
			}
		})
	}
}

// refuse makes the verifier refuse program name: it returns without
// setting its return value.
func refuse(name string) func(*ebpf.CollectionSpec) {
	return func(s *ebpf.CollectionSpec) {
		s.Programs[name].Instructions = asm.Instructions{asm.Return()}
	}
}

// TestRefusedProgram: a program the kernel refuses is a LoadError naming
// the probe, the program and the verifier's line, with the whole log in
// a file; Open fails, or with Partial leaves that probe off and runs the
// others.
func TestRefusedProgram(t *testing.T) {
	requireRoot(t)
	o := Options{Probes: []Probe{ProbeProcess, ProbeTCP}, OpenAfter: testOpenAfter, EditSpec: refuse("handle_exit")}

	c, err := open(o)
	if err == nil {
		c.Close()
		t.Fatal("Open loaded a program the verifier must refuse")
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T), want a *LoadError", err, err)
	}
	if le.Probe != ProbeProcess || le.Program != "handle_exit" {
		t.Errorf("LoadError names probe %s program %s, want process handle_exit", le.Probe, le.Program)
	}
	if !strings.Contains(le.Reason, "R0 !read_ok") {
		t.Errorf("reason %q, want the verifier's line", le.Reason)
	}
	if b, rerr := os.ReadFile(le.LogFile); rerr != nil || !strings.Contains(string(b), "R0 !read_ok") {
		t.Errorf("verifier log file %q: %v, %q", le.LogFile, rerr, b)
	} else {
		os.Remove(le.LogFile)
	}
	msg := err.Error()
	if strings.Count(msg, "\n") > 0 || len(msg) > 400 {
		t.Errorf("error is not one short line (%d bytes): %s", len(msg), msg)
	}
	t.Logf("refused: %s", msg)

	o.Partial = true
	c = openWith(t, o)
	if !slices.Equal(c.Probes(), []Probe{ProbeTCP}) {
		t.Errorf("Partial: probes %v, want [tcp]", c.Probes())
	}
	if len(c.Failed()) != 1 || c.Failed()[0].Program != "handle_exit" {
		t.Errorf("Partial: failed %v, want handle_exit", c.Failed())
	}
	for _, f := range c.Failed() {
		os.Remove(f.LogFile)
	}
	// The TCP probe works.
	conn := dialLocal(t)
	lport := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	conn.Close()
	if _, ok := readTCP(t, c, 5*time.Second, func(e CollectorTcpEvent) bool { return e.Conn.Lport == lport && e.Phase == PhaseClose }); !ok {
		t.Error("Partial: no close event from the TCP probe")
	}
}

// TestUnavailableIsNotAnError: a probe whose hook the kernel lacks is
// left off and said, not an error (a kernel's BTF is what tells).
func TestUnavailableIsNotAnError(t *testing.T) {
	requireRoot(t)
	saved := kernelNeeds[ProbeUnix]
	kernelNeeds[ProbeUnix] = append(slices.Clone(saved), need{"btf_trace_weft_no_such_tracepoint", "tracepoint weft_no_such_tracepoint", "no Linux"})
	t.Cleanup(func() { kernelNeeds[ProbeUnix] = saved })
	c, err := open(Options{Probes: []Probe{ProbeProcess, ProbeUnix}, OpenAfter: testOpenAfter})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !slices.Equal(c.Probes(), []Probe{ProbeProcess}) {
		t.Errorf("probes %v, want [process]", c.Probes())
	}
	found := false
	for _, u := range c.Unavailable() {
		if u.Probe == ProbeUnix && u.Feature == "tracepoint weft_no_such_tracepoint" {
			found = true
			t.Logf("said: %s", u)
		}
	}
	if !found {
		t.Errorf("unavailable %v, want the unix probe's missing tracepoint", c.Unavailable())
	}
}

// dialLocal returns a client connection to a listener on loopback (whose
// side of it is closed when the test ends).
func dialLocal(t *testing.T) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conn, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return conn
}

func TestVerifierReason(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  []string
		want string
	}{
		{"after the instruction", []string{"0: (b7) r1 = 0", "108: (85) call bpf_get_socket_cookie#46", "R1 type=untrusted_ptr_ expected=sock", "processed 319 insns"}, "R1 type=untrusted_ptr_ expected=sock"},
		{"a hint follows", []string{"0: (95) exit", "R0 !read_ok", "Initialize R0 on every path before this instruction.", "processed 1 insns"}, "R0 !read_ok"},
		{"no instruction", []string{"BPF_STX uses reserved fields", "processed 0 insns (limit 1000000)"}, "BPF_STX uses reserved fields"},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifierReason(tc.log); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
