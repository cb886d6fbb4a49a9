package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/collectors/cgroup"
	"github.com/weftobs/weft/collectors/collector"
	"github.com/weftobs/weft/collectors/decode"
	"github.com/weftobs/weft/collectors/enrich"
	"github.com/weftobs/weft/collectors/metadata"
	"github.com/weftobs/weft/streams/embedded"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
)

// Options configure Run. Zero values take the defaults.
type Options struct {
	// Events is how many events the user-space path publishes, from
	// replayed records (a TCP close record is two). Default 1,000,000.
	Events int
	// Conns is the connections per storm segment (each round runs two:
	// one without the collector, one with it). Default 5,000.
	Conns int
	// Workers are the storm's threads, each driving both ends of its
	// connections. Default: one per CPU but one, which is left to the
	// collector (as a DaemonSet's CPU request reserves it on a node); with
	// every CPU busy with the storm, the collector's own CPU is taken from
	// it and shows in the ratio.
	Workers int
	// Rounds of (baseline, collector) segments, in alternating order.
	// Default 41.
	Rounds int
	// Payload bytes each way per connection. Default 64, at most 16 KiB:
	// one thread drives both ends, so a payload must fit the sockets'
	// buffers.
	Payload int
	// SkipStorm runs the user-space path only (no privileges needed).
	SkipStorm bool
	// Probes the storm's collector attaches; nil means the defaults.
	Probes []string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

func (o *Options) defaults() {
	if o.Events <= 0 {
		o.Events = 1_000_000
	}
	if o.Conns <= 0 {
		o.Conns = 5_000
	}
	if o.Workers <= 0 {
		o.Workers = max(1, runtime.NumCPU()-1)
	}
	if o.Rounds <= 0 {
		o.Rounds = 41
	}
	if o.Payload <= 0 {
		o.Payload = 64
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// maxPayload bounds Options.Payload.
const maxPayload = 16 << 10

// Result is what `weft bench collector --json` prints.
type Result struct {
	// UserspaceEventsPerSec: replayed records decoded, enriched, encoded and
	// published per second by one goroutine.
	UserspaceEventsPerSec float64 `json:"userspace_events_per_sec"`
	// UserspaceBaselineEventsPerSec: the same events, already decoded,
	// only encoded and published (the floor the publisher sets).
	UserspaceBaselineEventsPerSec float64 `json:"userspace_baseline_events_per_sec"`
	// RecordsSource says where the replayed records came from: "kernel"
	// (recorded now) or "recorded" (the committed capture).
	RecordsSource string `json:"records_source"`

	// StormConnectionsPerSec is the storm's rate without the collector.
	StormConnectionsPerSec float64 `json:"storm_connections_per_sec"`
	// StormConnectionsPerSecCollector is the rate with it attached.
	StormConnectionsPerSecCollector float64 `json:"storm_connections_per_sec_collector"`
	// StormOverheadRatio is the median over rounds of wall time with the
	// collector ÷ wall time without, each round's pair run back to back
	// (in alternating order, so neither half always runs first).
	StormOverheadRatio float64 `json:"storm_overhead_ratio"`
	// StormOverheadRatioCI95 is a 95% confidence interval of that median,
	// from the order statistics of the rounds' ratios (distribution-free):
	// how far the machine's noise lets the figure be read. More rounds
	// narrow it.
	StormOverheadRatioCI95 [2]float64 `json:"storm_overhead_ratio_ci95"`
	// StormRoundRatios are the rounds' ratios, in order: the spread is
	// the machine's noise.
	StormRoundRatios []float64 `json:"storm_round_ratios"`
	// StormWorkers is the storm's threads.
	StormWorkers int `json:"storm_workers,omitempty"`
	// StormCPUs and CollectorCPUs are where the storm's threads and the
	// collector (with the NATS server) ran, when there were CPUs to spare
	// for the collector; empty when everything shared every CPU.
	StormCPUs     []int `json:"storm_cpus,omitempty"`
	CollectorCPUs []int `json:"collector_cpus,omitempty"`
	// StormEventsPerSec is the events the collector published per second
	// during the storm.
	StormEventsPerSec float64 `json:"storm_events_per_sec"`
	// HookNsPerRun is each attached hook's cost per run in the kernel
	// (kernel.bpf_stats_enabled, over one more storm segment), by
	// program name.
	HookNsPerRun map[string]float64 `json:"hook_ns_per_run,omitempty"`
	// LostEvents: ring-buffer reserve failures over every storm round.
	LostEvents uint64 `json:"lost_events"`
	// CPUCoresPer10kEvents: CPU (user + system) of the collector's process
	// over the storm segments with its hooks attached (each from a drained
	// ring to a drained ring, publishing included), per 10,000 events/s;
	// the NATS server is not in it.
	CPUCoresPer10kEvents float64 `json:"cpu_cores_per_10k_events"`
	// RSSBytes is the peak resident set of the collector's process (a
	// child running the collector stage alone, as `weft run` would).
	RSSBytes uint64 `json:"rss_bytes"`
	// RSSAnonBytes is the collector's anonymous memory (heap, stacks, ring
	// buffer) at the end of a round; the rest of RSS is the binary's text.
	RSSAnonBytes uint64 `json:"rss_anon_bytes"`
	// RSSRingBytes is the ring buffer's share of RSS (kernel memory mapped
	// into the process; its data pages are mapped twice and count twice).
	// What is neither anonymous nor ring is the binary's text.
	RSSRingBytes uint64 `json:"rss_ring_bytes"`
	// StormSkipped says why there are no storm figures, if there are none.
	StormSkipped string `json:"storm_skipped,omitempty"`

	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
}

// StormCommand returns how to start this program as a storm child; Run
// uses it so the storm's own CPU is not counted as the collector's. The
// child must call StormMain first.
type StormCommand func() *exec.Cmd

// SelfStorm starts os.Executable() with args.
func SelfStorm(args ...string) StormCommand {
	return func() *exec.Cmd {
		self, _ := os.Executable()
		return exec.Command(self, args...)
	}
}

// Run measures. The storm needs the privileges eBPF needs; without them it
// is skipped and said so in the result.
func Run(ctx context.Context, o Options, child StormCommand) (*Result, error) {
	o.defaults()
	if o.Payload > maxPayload {
		return nil, fmt.Errorf("storm payload %d bytes: at most %d (one thread drives both ends of a connection)", o.Payload, maxPayload)
	}
	res := &Result{CPUs: runtime.NumCPU(), Kernel: kernel()}
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{DataDir: dir, Listen: "127.0.0.1:-1", ServerName: "bench"})
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	nc, js, err := natsconn.Connect(ctx, natsconn.Options{URL: srv.URL(), Name: "weft-bench"}, nil)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: schema.StreamEvents, Subjects: []string{"weft.events.>"}, Storage: jetstream.FileStorage,
		MaxBytes: 256 << 20, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}

	privErr := bpf.CheckPrivileges()
	switch {
	case o.SkipStorm:
		res.StormSkipped = "skipped by request"
	case privErr != nil:
		res.StormSkipped = privErr.Error()
	default:
		if err := storm(ctx, o, srv.URL(), child, res); err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
	}

	var records [][]byte
	if privErr == nil {
		o.Log.Info("recording ring-buffer records")
		if records, err = Record(4096, o.Payload); err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
		res.RecordsSource = "kernel"
	} else {
		if records, err = Recorded(); err != nil {
			return nil, err
		}
		res.RecordsSource = "recorded"
	}
	o.Log.Info("user-space path", "events", o.Events, "records", len(records))
	pubCfg := publish.Config{Stage: "bench", Node: "bench", Overflow: publish.OverflowBlock}
	full, base, err := Userspace(ctx, records, o.Events, func() (*publish.Publisher, error) {
		return publish.New(nc, pubCfg, nil, nil)
	})
	if err != nil {
		return nil, err
	}
	res.UserspaceEventsPerSec, res.UserspaceBaselineEventsPerSec = full, base
	return res, nil
}

// Userspace replays records through decode → enrich → encode → publish on
// one goroutine until n events are published and returns events/s, and
// the baseline: the same events, decoded beforehand, through encode →
// publish only. (A TCP close standing for its connect/accept too is one
// record and two events.) Each pass gets a fresh publisher from newPub and
// includes its final flush.
func Userspace(ctx context.Context, records [][]byte, n int, newPub func() (*publish.Publisher, error)) (full, baseline float64, err error) {
	if len(records) == 0 {
		return 0, 0, errors.New("no records to replay")
	}
	enr := enrich.New(cgroup.NewResolver(), metadata.None{}, nil)
	dec := decode.New(enr)
	// Baseline events: decoded once, up front; perRecord: how many events
	// each record is.
	events := make([]*schema.Event, 0, len(records))
	subjects := make([]string, 0, len(records))
	perRecord := make([]int, 0, len(records))
	for _, r := range records {
		d, err := dec.Decode(r)
		if err != nil {
			return 0, 0, fmt.Errorf("decode recorded record: %w", err)
		}
		k := 0
		for _, e := range []*schema.Event{d.Open, d.Event} {
			if e != nil {
				events = append(events, proto.Clone(e).(*schema.Event))
				subjects = append(subjects, schema.EventSubject("bench", d.Kind))
				k++
			}
		}
		perRecord = append(perRecord, k)
	}

	// pass runs f on items 0, 1, … (cycling through len) until it has
	// published n events; f returns how many it published.
	pass := func(items int, f func(p *publish.Publisher, i int) (int, error)) (float64, error) {
		p, err := newPub()
		if err != nil {
			return 0, err
		}
		defer p.Close(ctx)
		runtime.GC()
		start := time.Now()
		published := 0
		for i := 0; published < n; i++ {
			k, err := f(p, i%items)
			if err != nil {
				return 0, err
			}
			published += k
		}
		if err := p.Flush(ctx); err != nil {
			return 0, err
		}
		return float64(published) / time.Since(start).Seconds(), nil
	}
	baseline, err = pass(len(events), func(p *publish.Publisher, i int) (int, error) {
		return 1, p.Publish(ctx, subjects[i], events[i])
	})
	if err != nil {
		return 0, 0, err
	}
	cfg := collector.NewConfig()
	var pipe *collector.Pipeline
	full, err = pass(len(records), func(p *publish.Publisher, i int) (int, error) {
		if i == 0 && pipe == nil {
			pipe = collector.NewPipeline("bench", cfg, dec, p, nil)
		}
		return perRecord[i], pipe.Handle(ctx, records[i])
	})
	return full, baseline, err
}

// Record captures n ring-buffer records from the live kernel while a small
// storm runs (copies, 8-byte aligned).
func Record(n, payload int) ([][]byte, error) {
	c, err := bpf.Open(bpf.Options{})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		_, err := RunStorm(n, 2, payload)
		done <- err
	}()
	var out [][]byte
	var rec ringbufRecord
	deadline := time.Now().Add(30 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		c.SetDeadline(time.Now().Add(100 * time.Millisecond))
		if err := c.Read(&rec.Record); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return nil, err
		}
		out = append(out, aligned(rec.RawSample))
	}
	if err := <-done; err != nil {
		return nil, err
	}
	return out, nil
}

func aligned(b []byte) []byte {
	w := make([]uint64, (len(b)+7)/8)
	dst := unsafeBytes(w)[:len(b)]
	copy(dst, b)
	return dst
}

// EncodeRecords writes records as (u32 length, bytes) frames.
func EncodeRecords(records [][]byte) []byte {
	var buf bytes.Buffer
	for _, r := range records {
		binary.Write(&buf, binary.LittleEndian, uint32(len(r)))
		buf.Write(r)
	}
	return buf.Bytes()
}

// DecodeRecords reads what EncodeRecords wrote.
func DecodeRecords(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("truncated record frame")
		}
		n := int(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if len(b) < n {
			return nil, errors.New("truncated record")
		}
		out = append(out, aligned(b[:n]))
		b = b[n:]
	}
	return out, nil
}

func storm(ctx context.Context, o Options, srvURL string, child StormCommand, res *Result) error {
	pl := place(o.Workers)
	if len(pl.collector) > 0 {
		// This process serves NATS: it goes where the collector goes.
		all, err := allowedCPUs()
		if err != nil {
			return err
		}
		if err := pin(pl.collector); err != nil {
			return err
		}
		defer pin(all)
	}
	res.StormCPUs, res.CollectorCPUs = pl.storm, pl.collector
	// One storm child and one collector child for every round: the
	// storm runs segments on command, the collector attaches and
	// detaches its hooks on command, so each round's pair of segments
	// runs seconds apart, not minutes.
	sc := child()
	sc.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d,serve", stormEnv, o.Conns, o.Workers, o.Payload))
	if len(pl.storm) > 0 {
		sc.Env = append(sc.Env, pl.env(pl.storm))
	}
	sc.Stderr = os.Stderr
	sIn, err := sc.StdinPipe()
	if err != nil {
		return err
	}
	sOut, err := sc.StdoutPipe()
	if err != nil {
		return err
	}
	if err := sc.Start(); err != nil {
		return fmt.Errorf("storm child: %w", err)
	}
	defer func() {
		sIn.Close()
		sc.Wait()
	}()
	sLines := bufio.NewReader(sOut)
	segment := func() (time.Duration, error) {
		fmt.Fprintln(sIn, "run")
		line, err := sLines.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("storm child: %w", err)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("storm child said %q", line)
		}
		return time.Duration(ns), nil
	}
	coll, err := startCollector(child, o, srvURL, pl.collector)
	if err != nil {
		return err
	}
	defer coll.kill()
	attached := true
	// The collector's CPU and events over the segments with its hooks
	// attached, each between two drains: what reading and publishing a
	// storm's events costs, not attaching (its start-up scan) or idling.
	var cpuWith time.Duration
	var events uint64
	run := func(with bool) (time.Duration, error) {
		cmd := "drain"
		if with != attached {
			cmd = map[bool]string{true: "attach", false: "detach"}[with]
			attached = with
		}
		cpu0, ev0, err := coll.do(cmd)
		if err != nil {
			return 0, err
		}
		d, err := segment()
		if err != nil || !with {
			return d, err
		}
		cpu1, ev1, err := coll.do("drain")
		cpuWith += cpu1 - cpu0
		events += ev1 - ev0
		return d, err
	}
	// Warm up (page cache, connection paths, the collector's heap).
	for _, with := range []bool{false, true} {
		if _, err := run(with); err != nil {
			return err
		}
	}
	cpuWith, events = 0, 0
	var without, with []time.Duration
	var ratios []float64
	for r := 0; r < o.Rounds; r++ {
		// ABBA: odd rounds run the collector's half first, so a drift
		// of the machine within a round favours neither half.
		first := r%2 == 1
		var d [2]time.Duration // without, with
		for _, w := range []bool{first, !first} {
			i := 0
			if w {
				i = 1
			}
			if d[i], err = run(w); err != nil {
				return err
			}
		}
		without, with = append(without, d[0]), append(with, d[1])
		ratios = append(ratios, d[1].Seconds()/d[0].Seconds())
		o.Log.Info("storm round", "round", r, "without", d[0], "with", d[1], "ratio", ratios[r])
	}
	// The hooks' cost per run, from the kernel's BPF statistics, over
	// one more segment with them on (they cost two clock reads a run,
	// so they stay off for the rounds above).
	cpuRounds, eventsRounds := cpuWith, events
	if _, _, err := coll.do("stats-on"); err != nil {
		o.Log.Warn("no hook costs", "err", err)
	} else {
		if _, err := run(true); err != nil {
			return err
		}
		costs, err := coll.costs()
		if err != nil {
			return err
		}
		res.HookNsPerRun = map[string]float64{}
		for name, h := range costs {
			res.HookNsPerRun[name] = h.NsPerRun()
		}
	}
	cpuWith, events = cpuRounds, eventsRounds
	cr, err := coll.stop()
	if err != nil {
		return err
	}
	res.LostEvents = cr.Lost
	res.RSSBytes, res.RSSAnonBytes, res.RSSRingBytes = cr.RSS, cr.Anon, cr.Ring
	o.Log.Info("collector", "events", cr.Events, "lost", cr.Lost, "cpu", cr.CPU, "rss", cr.RSS, "anon", cr.Anon, "ring", cr.Ring, "file", cr.File)
	bw, cw := median(without), median(with)
	res.StormConnectionsPerSec = float64(o.Conns) / bw.Seconds()
	res.StormConnectionsPerSecCollector = float64(o.Conns) / cw.Seconds()
	res.StormOverheadRatio = median(ratios)
	res.StormOverheadRatioCI95 = medianCI95(ratios)
	res.StormRoundRatios = ratios
	res.StormWorkers = o.Workers
	var withSum time.Duration
	for _, d := range with {
		withSum += d
	}
	res.StormEventsPerSec = float64(events) / withSum.Seconds()
	if events > 0 {
		// CPU seconds per event × 10,000: cores per 10,000 events/s.
		res.CPUCoresPer10kEvents = cpuWith.Seconds() / float64(events) * 10_000
	}
	return nil
}

func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// medianCI95 is a 95% confidence interval of the median of v: the k-th
// smallest and k-th largest values, k from the binomial distribution of
// how many values fall below the median (normal approximation; no
// assumption about v's distribution). With fewer than 6 values it is
// v's whole range, which covers the median with less than 95%.
func medianCI95(v []float64) [2]float64 {
	if len(v) == 0 {
		return [2]float64{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := float64(len(s))
	k := int(math.Floor((n - 1.96*math.Sqrt(n)) / 2)) // 1-based rank
	k = max(k, 1)
	return [2]float64{s[k-1], s[len(s)-k]}
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
