package bpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// Probe names a group of programs that can be switched on or off.
type Probe string

// The probes.
const (
	ProbeProcess Probe = "process" // exec and exit
	ProbeTCP     Probe = "tcp"     // connect, accept, close, failed connects
	ProbeUnix    Probe = "unix"    // unix-socket connects, with both ends
)

// AllProbes lists every probe.
var AllProbes = []Probe{ProbeProcess, ProbeTCP, ProbeUnix}

// Record types: the first field after ts_ns and cgroup_id of every record.
const (
	TypeExec uint32 = 1
	TypeExit uint32 = 2
	TypeTCP  uint32 = 3
	TypeUnix uint32 = 4
)

// TypeOffset is the byte offset of the type field in every record.
const TypeOffset = 16

// Options configure Open.
type Options struct {
	// Probes to attach; nil means all.
	Probes []Probe
	// RingBufferBytes is the ring buffer's size: a power of two and a
	// multiple of the page size. Default 8 MiB.
	RingBufferBytes int
	// MaxSockets bounds the TCP sockets tracked between connect/accept and
	// close (an LRU: past it the oldest is forgotten). Default 65536.
	MaxSockets int
	// WakeupBytes batches wakeups: each CPU wakes the reader once it has
	// written its share of this much (WakeupBytes ÷ possible CPUs) since
	// its last wakeup, and Read wakes itself every PollInterval to
	// take what is there. 0 wakes the reader for every record.
	WakeupBytes int
	// PollInterval bounds how long a record can wait when WakeupBytes is
	// set. Default 20ms.
	PollInterval time.Duration
	// OpenAfter: a TCP connection is reported once, by its close record
	// (see OpenOf), unless it is still open this long after it opened;
	// then Sweep sends its connect/accept record. Default 1s.
	OpenAfter time.Duration
	// ProgressEvery: how often Sweep also sends, for each connection
	// whose connect/accept it sent, its byte totals so far (a progress
	// record, with the totals of the previous one) when they changed.
	// 0 sends none.
	ProgressEvery time.Duration
	// Partial keeps Open going when the kernel refuses a probe's
	// program: that probe is left off and said in Failed. Without it,
	// Open fails.
	Partial bool
	// EditSpec, when set, edits the programs before they load: for tests
	// (a program made for the kernel to refuse) and nothing else.
	EditSpec func(*ebpf.CollectionSpec)

	// For tests: load the legacy object, or read without casts, on a
	// kernel that would not need to.
	legacy, noCasts bool
}

// Collector is the loaded, attached programs and their ring buffer.
// Read is for one goroutine; Lost and Links are safe from any. Close
// detaches everything and unblocks Read.
type Collector struct {
	objs   CollectorObjects
	links  []link.Link
	probes []Probe // loaded
	rd     *ringbuf.Reader

	unavailable []Unavailable
	failed      []*LoadError
	kernel      KernelInfo
	poll        time.Duration

	openAfter time.Duration
	progress  time.Duration
	sweepMu   sync.Mutex // one sweep at a time: each sets sweep_age
	lastProg  time.Time  // the last progress pass, under sweepMu
	sweeper   *link.Iter // the sweep's iterator, made once

	closeOnce  sync.Once
	closeErr   error
	detachOnce sync.Once
	detachErr  error
}

// Open checks privileges, loads the programs the chosen probes need and
// attaches them. What this kernel cannot give is left out and said in
// Unavailable, never an error. A program the kernel refuses is an error
// (a *LoadError, joined with any others), unless Options.Partial: then its
// probe is left off and the refusal is in Failed. On error nothing is
// left loaded or attached.
func Open(o Options) (*Collector, error) {
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	if err := raiseMemlock(); err != nil {
		return nil, err
	}
	if o.RingBufferBytes == 0 {
		o.RingBufferBytes = 8 << 20
	}
	if o.MaxSockets == 0 {
		o.MaxSockets = 65536
	}
	if o.Probes == nil {
		o.Probes = AllProbes
	}
	page := os.Getpagesize()
	if o.RingBufferBytes < page || o.RingBufferBytes&(o.RingBufferBytes-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: want a power of two of at least %d", o.RingBufferBytes, page)
	}
	// One parse of the kernel's BTF, shared by the feature look-ups and
	// every program's load.
	cache := btf.NewCache()
	kernel, err := cache.Kernel()
	if err != nil {
		return nil, fmt.Errorf("%w: read kernel BTF: %v (a kernel built with CONFIG_DEBUG_INFO_BTF, Linux 5.5+)", ErrPrivileges, err)
	}
	info := KernelInfo{Release: kernelRelease(), Object: "default"}
	load := LoadCollector
	if o.legacy || !haveAtomics() {
		info.Object, load = "legacy", LoadCollectorLegacy
	}
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("load collector spec: %w", err)
	}
	if v, ok := spec.Variables["have_rdonly_cast"]; ok {
		_, err := kernel.AnyTypeByName("bpf_rdonly_cast")
		info.Casts = err == nil && !o.noCasts
		if err := v.Set(info.Casts); err != nil {
			return nil, fmt.Errorf("set have_rdonly_cast: %w", err)
		}
	}
	spec.Maps[CollectorMapEvents].MaxEntries = uint32(o.RingBufferBytes)
	spec.Maps[CollectorMapSocks].MaxEntries = uint32(o.MaxSockets)
	if o.EditSpec != nil {
		o.EditSpec(spec)
	}
	if o.OpenAfter <= 0 {
		o.OpenAfter = time.Second
	}
	if o.WakeupBytes > 0 {
		// Each CPU counts its own share: together they wake the reader
		// by the time WakeupBytes wait.
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return nil, fmt.Errorf("possible CPUs: %w", err)
		}
		if err := spec.Variables["wakeup_bytes"].Set(uint64(max(1, o.WakeupBytes/cpus))); err != nil {
			return nil, fmt.Errorf("set wakeup_bytes: %w", err)
		}
		if o.PollInterval <= 0 {
			o.PollInterval = 20 * time.Millisecond
		}
	}

	c := &Collector{poll: o.PollInterval, openAfter: o.OpenAfter, progress: o.ProgressEvery, kernel: info}
	if o.WakeupBytes == 0 {
		c.poll = 0
	}
	ld, err := newLoader(spec, cache)
	if err != nil {
		return nil, err
	}
	if err := c.load(ld, kernel, o.Probes); err != nil {
		c.Close()
		return nil, err
	}
	if len(c.failed) > 0 && !o.Partial {
		errs := make([]error, len(c.failed))
		for i, f := range c.failed {
			errs[i] = f
		}
		c.Close()
		return nil, errors.Join(errs...)
	}
	if err := c.attach(c.probes); err != nil {
		c.Close()
		return nil, err
	}
	c.rd, err = ringbuf.NewReader(c.objs.Events)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return c, nil
}

// load loads what each probe needs, probe by probe: one the kernel lacks
// a hook for goes to c.unavailable, one whose program the kernel refuses
// to c.failed; the rest to c.probes.
func (c *Collector) load(ld *loader, kernel *btf.Spec, probes []Probe) error {
	defer ld.close()
	maps := make(map[string]*ebpf.Map, len(ld.maps))
	for n, m := range ld.maps {
		maps[n] = m
	}
	// Assign takes what c.objs names out of maps (and out of the
	// loader's keeping); the rest the loader closes.
	defer func() {
		for n := range ld.maps {
			if _, ok := maps[n]; !ok {
				delete(ld.maps, n)
			}
		}
	}()
	if err := (&ebpf.Collection{Maps: maps}).Assign(&c.objs.CollectorMaps); err != nil {
		return fmt.Errorf("eBPF maps: %w", err)
	}
	progs := map[string]**ebpf.Program{
		"handle_exec": &c.objs.HandleExec, "handle_exit": &c.objs.HandleExit,
		"handle_set_state": &c.objs.HandleSetState, "scan_files": &c.objs.ScanFiles,
		"scan_tcp": &c.objs.ScanTcp, "handle_data_ready": &c.objs.HandleDataReady,
		"sweep_run": &c.objs.SweepRun, "sweep_socks": &c.objs.SweepSocks,
	}
probes:
	for _, p := range probes {
		names, ok := probePrograms[p]
		if !ok {
			return fmt.Errorf("unknown probe %q (known: %v)", p, AllProbes)
		}
		if m := missing(p, kernel); len(m) > 0 {
			c.unavailable = append(c.unavailable, m...)
			continue
		}
		for _, name := range names {
			prog, err := ld.program(name)
			if err != nil {
				c.failed = append(c.failed, loadError(p, name, err))
				for _, n := range names {
					(*progs[n]).Close()
					*progs[n] = nil
				}
				continue probes
			}
			*progs[name] = prog
		}
		c.probes = append(c.probes, p)
		if p != ProbeTCP {
			continue
		}
		// The sweep: the first form the kernel takes. Without one, a
		// connection is reported at its close only.
		var errs []string
		for _, name := range sweepPrograms {
			prog, err := ld.program(name)
			if err == nil {
				*progs[name] = prog
				break
			}
			errs = append(errs, fmt.Sprintf("%s: %s", name, loadError(p, name, err).Reason))
		}
		switch {
		case c.objs.SweepRun != nil:
			c.kernel.Sweep = "syscall"
		case c.objs.SweepSocks != nil:
			c.kernel.Sweep = "iterator"
		default:
			c.kernel.Sweep = "none"
			c.unavailable = append(c.unavailable, Unavailable{Probe: p,
				Feature: "sweep of open connections (" + strings.Join(errs, "; ") + ")",
				Effect:  "a TCP connection is reported when it closes, not while it is open",
				Since:   "Linux 5.14 (bpf_for_each_map_elem in a syscall program)"})
		}
	}
	return nil
}

// HookCost is a hook's run count and time in the kernel (collected while
// kernel.bpf_stats_enabled is on, e.g. under ebpf.EnableStats).
type HookCost struct {
	Runs    uint64        `json:"runs"`
	Runtime time.Duration `json:"runtime_ns"`
}

// NsPerRun is the mean cost of one run.
func (h HookCost) NsPerRun() float64 {
	if h.Runs == 0 {
		return 0
	}
	return float64(h.Runtime.Nanoseconds()) / float64(h.Runs)
}

// HookCosts are the attached hooks' costs so far, by program name.
func (c *Collector) HookCosts() (map[string]HookCost, error) {
	out := map[string]HookCost{}
	for name, p := range map[string]*ebpf.Program{
		"handle_exec": c.objs.HandleExec, "handle_exit": c.objs.HandleExit,
		"handle_set_state": c.objs.HandleSetState, "handle_data_ready": c.objs.HandleDataReady,
	} {
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = HookCost{Runs: st.RunCount, Runtime: st.Runtime}
	}
	return out, nil
}

// Kernel is how the collector fits this kernel.
func (c *Collector) Kernel() KernelInfo { return c.kernel }

// Probes are the probes loaded and attached.
func (c *Collector) Probes() []Probe { return c.probes }

// Unavailable is what this kernel cannot give, by probe.
func (c *Collector) Unavailable() []Unavailable { return c.unavailable }

// Failed are the programs this kernel refused (only with Options.Partial).
func (c *Collector) Failed() []*LoadError { return c.failed }

func (c *Collector) attach(probes []Probe) error {
	p := &c.objs.CollectorPrograms
	tracing := func(prog *ebpf.Program) error {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s: %w", prog, err)
		}
		c.links = append(c.links, l)
		return nil
	}
	tcpOn := false
	for _, pr := range probes {
		var err error
		switch pr {
		case ProbeProcess:
			err = errors.Join(tracing(p.HandleExec), tracing(p.HandleExit))
		case ProbeTCP:
			tcpOn = true
			err = tracing(p.HandleSetState)
		case ProbeUnix:
			err = tracing(p.HandleDataReady)
		default:
			err = fmt.Errorf("unknown probe %q", pr)
		}
		if err != nil {
			return err
		}
	}
	if tcpOn {
		// Now that the hooks see every new socket, find the ones that
		// were there before: listeners and connections, with owners.
		return c.scan()
	}
	return nil
}

// scan finds the sockets open before attaching: listeners in every
// task's files, then connected sockets there, then (in this network
// namespace) connections not accepted yet.
func (c *Collector) scan() error {
	p := &c.objs.CollectorPrograms
	for phase := uint32(0); phase < 2; phase++ {
		if err := c.objs.ScanPhase.Put(uint32(0), phase); err != nil {
			return fmt.Errorf("start-up scan: %w", err)
		}
		if err := runIter(p.ScanFiles, "task_file", nil); err != nil {
			return err
		}
	}
	return runIter(p.ScanTcp, "tcp", nil)
}

// Sweep sends the connect/accept records of the TCP connections open for
// longer than Options.OpenAfter that have not been reported yet: call it
// every so often (the collector stage does, every OpenAfter/2). Safe to
// call concurrently with Read.
func (c *Collector) Sweep() error {
	c.sweepMu.Lock()
	// A pass at most a quarter OpenAfter early is this interval's: the
	// ticker that calls Sweep runs every OpenAfter/2.
	prog := c.progress > 0 && time.Since(c.lastProg) >= c.progress-c.openAfter/4
	if prog {
		c.lastProg = time.Now()
	}
	c.sweepMu.Unlock()
	return c.sweep(c.openAfter, prog)
}

// Progress is a sweep that sends the connect/accept of connections open
// longer than OpenAfter and the progress of every connection whose
// connect/accept was sent and whose totals changed, now.
func (c *Collector) Progress() error { return c.sweep(c.openAfter, true) }

// SweepAll is Sweep for every open connection not reported yet, however
// young: after Detach, while the records are still read, so none that was
// seen open goes unreported. A pass never fills more than half the ring
// buffer, so SweepAll repeats, giving the reader time, until a pass
// leaves nothing or ctx ends.
func (c *Collector) SweepAll(ctx context.Context) error {
	for {
		before, err := sumPerCPUAt(c.objs.Untracked, slotSweepDeferred, "sweep")
		if err != nil {
			return err
		}
		if err := c.sweep(0, false); err != nil {
			return err
		}
		after, err := sumPerCPUAt(c.objs.Untracked, slotSweepDeferred, "sweep")
		if err != nil {
			return err
		}
		if after == before {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sweep: %d open connections not reported: %w", after-before, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// slotSweepDeferred is collector.c's SWEEP_DEFERRED in untracked.
const slotSweepDeferred = 3

func (c *Collector) sweep(age time.Duration, progress bool) error {
	c.sweepMu.Lock()
	defer c.sweepMu.Unlock()
	if err := c.objs.SweepAge.Put(uint32(0), uint64(age)); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var prog uint64
	if progress {
		prog = 1
	}
	if err := c.objs.SweepAge.Put(uint32(1), prog); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if c.objs.SweepRun != nil {
		// The syscall form: one run walks the map.
		if _, err := c.objs.SweepRun.Run(&ebpf.RunOptions{}); err != nil {
			return fmt.Errorf("sweep: %w", err)
		}
		return nil
	}
	if c.objs.SweepSocks == nil {
		return nil // no sweep on this kernel: closes report everything
	}
	if c.sweeper == nil {
		it, err := link.AttachIter(link.IterOptions{Program: c.objs.SweepSocks, Map: c.objs.Socks})
		if err != nil {
			return fmt.Errorf("attach the sweep iterator: %w", err)
		}
		c.sweeper = it
	}
	return readIter(c.sweeper, "sweep")
}

// OpenOf returns the connect (client) or accept (server) record a close
// record stands for: a connection is reported by one record, its close,
// unless Sweep sent its connect/accept while it was open (OpenSent). The
// record is the close's, at the connection's start, with no bytes.
func OpenOf(e *CollectorTcpEvent) (CollectorTcpEvent, bool) {
	if e.Phase != PhaseClose || e.OpenSent != 0 {
		return CollectorTcpEvent{}, false
	}
	o := *e
	o.Phase = PhaseConnect
	if e.Role == RoleServer {
		o.Phase = PhaseAccept
	}
	o.Hdr.TsNs = e.StartNs
	o.BytesSent, o.BytesReceived = 0, 0
	o.OpenSent = 1
	return o, true
}

// TCP record phases and roles (collector.c's tcp_phase and role).
const (
	PhaseConnect       uint8 = 1
	PhaseAccept        uint8 = 2
	PhaseClose         uint8 = 3
	PhaseConnectFailed uint8 = 4
	PhaseProgress      uint8 = 5

	RoleClient uint8 = 1
	RoleServer uint8 = 2
)

// runIter runs an iterator program once over everything it walks (the
// elements of m, when given).
func runIter(prog *ebpf.Program, what string, m *ebpf.Map) error {
	it, err := link.AttachIter(link.IterOptions{Program: prog, Map: m})
	if err != nil {
		return fmt.Errorf("attach %s iterator: %w", what, err)
	}
	defer it.Close()
	return readIter(it, what)
}

// readIter runs an attached iterator once.
func readIter(it *link.Iter, what string) error {
	rd, err := it.Open()
	if err != nil {
		return fmt.Errorf("open %s iterator: %w", what, err)
	}
	defer rd.Close()
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return fmt.Errorf("run %s iterator: %w", what, err)
	}
	return nil
}

// Read blocks for the next record; rec.RawSample is reused across calls
// (the caller owns it until the next Read). After Close it returns an
// error matching ringbuf.ErrClosed; after Flush, once the ring is empty,
// ringbuf.ErrFlushed. Without WakeupBytes, SetDeadline bounds the wait.
func (c *Collector) Read(rec *ringbuf.Record) error {
	if c.poll == 0 {
		return c.rd.ReadInto(rec)
	}
	for {
		c.rd.SetDeadline(time.Now().Add(c.poll))
		err := c.rd.ReadInto(rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // records submitted without a wakeup are read now
		}
		return err
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (only
// without WakeupBytes, which runs its own timer).
func (c *Collector) SetDeadline(t time.Time) { c.rd.SetDeadline(t) }

// Lost is the number of events the kernel dropped because the ring buffer
// was full, summed over CPUs, since Open.
func (c *Collector) Lost() (uint64, error) {
	return sumPerCPU(c.objs.Lost, "lost")
}

// Gaps are what the kernel hooks could not know, summed over CPUs since
// Open. Every such event is still sent with what was known, except an
// untracked close.
type Gaps struct {
	// UntrackedCloses: TCP connections that closed without the collector
	// having seen them open (opened before it attached and missed by the
	// start-up scan, or forgotten because more than MaxSockets were open
	// at once: the LRU evicted them). Their close events were not sent,
	// nor their connect/accept unless Sweep had sent it.
	UntrackedCloses uint64
	// UnownedAccepts: server-side TCP connections whose listener was not
	// known (it listen()ed without bind(), or was evicted): sent with the
	// socket's cgroup and no process.
	UnownedAccepts uint64
	// UnixUnmatched: unix connections whose client socket was not found
	// on the listener's queue (taken by accept() before the hook ran):
	// sent under a one-off id instead of the client's inode number.
	UnixUnmatched uint64
	// MissedRuns: hook runs the kernel skipped because the same hook
	// was already running on that CPU (an interrupt came in the middle
	// of it; Linux 5.12+ counts these, older kernels run both). Each
	// may have lost what that run would have recorded: a TCP side's
	// owner, or its close.
	MissedRuns uint64
}

// Gaps reads the kernel's gap counters.
func (c *Collector) Gaps() (Gaps, error) {
	var g Gaps
	for slot, n := range []*uint64{&g.UntrackedCloses, &g.UnownedAccepts, &g.UnixUnmatched} {
		var err error
		if *n, err = sumPerCPUAt(c.objs.Untracked, uint32(slot), "untracked"); err != nil {
			return Gaps{}, err
		}
	}
	for _, p := range []*ebpf.Program{c.objs.HandleExec, c.objs.HandleExit, c.objs.HandleSetState, c.objs.HandleDataReady} {
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err != nil {
			return Gaps{}, fmt.Errorf("read missed runs: %w", err)
		}
		g.MissedRuns += st.RecursionMisses
	}
	return g, nil
}

func sumPerCPU(m *ebpf.Map, name string) (uint64, error) {
	return sumPerCPUAt(m, 0, name)
}

func sumPerCPUAt(m *ebpf.Map, slot uint32, name string) (uint64, error) {
	var perCPU []uint64
	if err := m.Lookup(slot, &perCPU); err != nil {
		return 0, fmt.Errorf("read %s counter: %w", name, err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Links are the attached links (for tests: each must be gone after Close).
func (c *Collector) Links() []link.Link { return c.links }

// ProgramIDs are the kernel ids of the loaded programs.
func (c *Collector) ProgramIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{c.objs.HandleExec, c.objs.HandleExit, c.objs.HandleSetState,
		c.objs.HandleDataReady, c.objs.ScanFiles, c.objs.ScanTcp, c.objs.SweepSocks, c.objs.SweepRun} {
		if p == nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// Detach detaches every program: no new records after it returns. What
// the ring buffer holds can still be read; Flush makes Read return it all
// and then ringbuf.ErrFlushed. Idempotent.
func (c *Collector) Detach() error {
	c.detachOnce.Do(func() { c.detachErr = c.Pause() })
	return c.detachErr
}

// Pause detaches every program, keeping the maps and the ring buffer;
// Resume attaches them again (and scans for the sockets opened in
// between). For measuring what the hooks cost (weft bench collector);
// not concurrently with each other, Detach or Close.
func (c *Collector) Pause() error {
	var errs []error
	for i := len(c.links) - 1; i >= 0; i-- {
		if err := c.links[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	c.links = nil
	return errors.Join(errs...)
}

// Resume attaches what Pause detached.
func (c *Collector) Resume() error {
	if len(c.links) > 0 {
		return nil
	}
	if err := c.attach(c.probes); err != nil {
		return errors.Join(err, c.Pause())
	}
	return nil
}

// Buffered is how many bytes the ring buffer holds unread.
func (c *Collector) Buffered() int { return c.rd.AvailableBytes() }

// Flush wakes Read up to return every record in the ring buffer, then
// ringbuf.ErrFlushed.
func (c *Collector) Flush() error { return c.rd.Flush() }

// Close detaches every program, closes the ring buffer (Read returns
// ringbuf.ErrClosed) and unloads the programs and maps. Idempotent.
func (c *Collector) Close() error {
	c.closeOnce.Do(func() {
		errs := []error{c.Detach()}
		c.sweepMu.Lock()
		if c.sweeper != nil {
			errs = append(errs, c.sweeper.Close())
			c.sweeper = nil
		}
		c.sweepMu.Unlock()
		if c.rd != nil {
			errs = append(errs, c.rd.Close())
		}
		errs = append(errs, c.objs.Close())
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Capabilities the collector needs (linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// ErrPrivileges is returned (wrapped, naming what is missing) when this
// process cannot load the collector.
var ErrPrivileges = errors.New("missing privileges for eBPF")

// CheckPrivileges reports what this process lacks to load and attach the
// collector: CAP_BPF, CAP_PERFMON (or CAP_SYS_ADMIN for both) and kernel
// BTF, all named in one error that wraps ErrPrivileges. (Every hook is a
// BTF tracepoint or an iterator: tracefs is not needed.)
func CheckPrivileges() error {
	var missing []string
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("%w: cannot read capabilities: %v", ErrPrivileges, err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "kernel BTF (/sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s (run as root, or grant the capabilities: securityContext.capabilities.add: [BPF, PERFMON])", ErrPrivileges, strings.Join(missing, ", "))
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}
