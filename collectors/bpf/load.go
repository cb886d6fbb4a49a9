package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// What each probe loads: its programs, in the order they are loaded. The
// TCP probe's sweep is loaded apart (sweepPrograms): it has two forms.
var probePrograms = map[Probe][]string{
	ProbeProcess: {"handle_exec", "handle_exit"},
	ProbeTCP:     {"handle_set_state", "scan_files", "scan_tcp"},
	ProbeUnix:    {"handle_data_ready"},
}

// sweepPrograms are the sweep's two forms, the preferred first: a syscall
// program walking socks with bpf_for_each_map_elem (Linux 5.14+), and a
// map-element iterator (Linux 5.9+, refused by some kernel builds).
var sweepPrograms = []string{"sweep_run", "sweep_socks"}

// kernelNeeds is what a probe needs of the kernel beyond BTF, as BTF type
// names (a tp_btf tracepoint exists when its btf_trace_<name> typedef
// does), with the first kernel that has each.
var kernelNeeds = map[Probe][]need{
	ProbeProcess: {{"btf_trace_sched_process_exec", "tracepoint sched_process_exec", "Linux 5.5"}, {"btf_trace_sched_process_exit", "tracepoint sched_process_exit", "Linux 5.5"}},
	ProbeTCP:     {{"btf_trace_inet_sock_set_state", "tracepoint inet_sock_set_state", "Linux 5.5"}},
	// No other hook sees both ends of a unix connect without syscall
	// tracepoints (which would slow every system call on the node).
	ProbeUnix: {{"btf_trace_sk_data_ready", "tracepoint sk_data_ready", "Linux 6.3"}},
}

type need struct{ btfType, feature, since string }

// Unavailable is something the kernel cannot give the collector: a probe
// (Program empty: the whole probe is off) or a part of one.
type Unavailable struct {
	Probe   Probe  `json:"probe"`
	Feature string `json:"feature"` // what the kernel lacks
	Effect  string `json:"effect"`  // what the collector does without it
	Since   string `json:"since,omitempty"`
}

func (u Unavailable) String() string {
	s := fmt.Sprintf("probe %s: this kernel has no %s", u.Probe, u.Feature)
	if u.Since != "" {
		s += " (" + u.Since + " has it)"
	}
	return s + ": " + u.Effect
}

// LoadError is a program the kernel refused to load or attach: a probe
// that should have worked on this kernel and did not.
type LoadError struct {
	Probe   Probe
	Program string
	// Reason is the verifier's last line, or the error of a refusal
	// without a verifier log.
	Reason string
	// LogFile holds the verifier's whole log, when there was one.
	LogFile string
	Err     error
}

func (e *LoadError) Error() string {
	s := fmt.Sprintf("probe %s: program %s refused by this kernel: %s", e.Probe, e.Program, e.Reason)
	if e.LogFile != "" {
		s += " (verifier log: " + e.LogFile + ")"
	}
	return s
}

func (e *LoadError) Unwrap() error { return e.Err }

// loadError makes a LoadError of err, writing a verifier log to a file.
func loadError(p Probe, prog string, err error) *LoadError {
	le := &LoadError{Probe: p, Program: prog, Err: err, Reason: err.Error()}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		le.Reason = verifierReason(ve.Log)
		if le.Reason == "" {
			le.Reason = ve.Cause.Error()
		}
		f := filepath.Join(os.TempDir(), fmt.Sprintf("weft-verifier-%s-%d.log", prog, os.Getpid()))
		if werr := os.WriteFile(f, []byte(strings.Join(ve.Log, "\n")+"\n"), 0o644); werr == nil {
			le.LogFile = f
		}
	}
	return le
}

// verifierReason is the line of a verifier log that says why: the line
// after the last instruction shown ("108: (85) call …"), else the last
// line that is not the statistics. (Newer verifiers add hints after it.)
func verifierReason(log []string) string {
	last := -1
	for i, l := range log {
		if insnLine.MatchString(l) {
			last = i
		}
	}
	if last >= 0 && last+1 < len(log) {
		if r := strings.TrimSpace(log[last+1]); r != "" && !isStats(r) {
			return r
		}
	}
	for i := len(log) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(log[i]); l != "" && !isStats(l) {
			return l
		}
	}
	return ""
}

var insnLine = regexp.MustCompile(`^\d+: \([0-9a-f]{2}\)`)

func isStats(l string) bool {
	return strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "verification time") || strings.HasPrefix(l, "stack depth")
}

// missing returns what the kernel lacks for probe p (nil: nothing).
func missing(p Probe, kernel *btf.Spec) []Unavailable {
	var out []Unavailable
	for _, n := range kernelNeeds[p] {
		if _, err := kernel.AnyTypeByName(n.btfType); err != nil {
			effect := "the probe is off"
			if p == ProbeUnix {
				effect = "unix-socket calls are not reported"
			}
			out = append(out, Unavailable{Probe: p, Feature: n.feature, Effect: effect, Since: n.since})
		}
	}
	return out
}

// haveAtomics tells whether the kernel takes BPF atomic exchanges (Linux
// 5.12+): without them the legacy object is loaded.
func haveAtomics() bool {
	spec := &ebpf.ProgramSpec{
		Type: ebpf.SocketFilter,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 1),
			// BPF_STX | BPF_ATOMIC | BPF_DW, imm BPF_XCHG: spelled out,
			// the way the kernel reads it.
			{OpCode: asm.StoreXAddOp(asm.DWord), Dst: asm.R1, Src: asm.R2, Constant: 0xe1},
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
		License: "GPL",
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return false
	}
	p.Close()
	return true
}

// KernelInfo is how the collector fits this kernel: which object it
// loaded and how it reads and sweeps.
type KernelInfo struct {
	Release string `json:"release"`
	// Object: "default", or "legacy" for kernels without BPF atomics.
	Object string `json:"object"`
	// Casts: socket fields beyond struct sock are read by BTF pointer
	// (bpf_rdonly_cast, Linux 6.2+), else by bpf_probe_read_kernel.
	Casts bool `json:"casts"`
	// Sweep: "syscall", "iterator" or "none".
	Sweep string `json:"sweep"`
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// raiseMemlock lifts RLIMIT_MEMLOCK where the kernel charges BPF memory to
// it (before Linux 5.11); a no-op where it charges the cgroup.
func raiseMemlock() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("%w: raise RLIMIT_MEMLOCK for eBPF maps (this kernel counts their memory against it): %v; grant CAP_SYS_RESOURCE or run with ulimit -l unlimited", ErrPrivileges, err)
	}
	return nil
}

// loader loads programs one by one against one set of maps, so a program
// the kernel refuses takes only its own probe down.
type loader struct {
	spec  *ebpf.CollectionSpec
	maps  map[string]*ebpf.Map
	cache *btf.Cache
}

// sub is spec with only the named programs (a shallow copy: loading
// copies what it changes).
func sub(spec *ebpf.CollectionSpec, names ...string) *ebpf.CollectionSpec {
	s := *spec
	s.Programs = make(map[string]*ebpf.ProgramSpec, len(names))
	for _, n := range names {
		s.Programs[n] = spec.Programs[n]
	}
	return &s
}

func newLoader(spec *ebpf.CollectionSpec, cache *btf.Cache) (*loader, error) {
	coll, err := ebpf.NewCollectionWithOptions(sub(spec), ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		return nil, fmt.Errorf("create eBPF maps: %w", err)
	}
	return &loader{spec: spec, maps: coll.Maps, cache: cache}, nil
}

func (l *loader) program(name string) (*ebpf.Program, error) {
	coll, err := ebpf.NewCollectionWithOptions(sub(l.spec, name), ebpf.CollectionOptions{MapReplacements: l.maps, Cache: l.cache})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(name), nil
}

// close closes the maps not handed over.
func (l *loader) close() {
	for _, m := range l.maps {
		m.Close()
	}
}
