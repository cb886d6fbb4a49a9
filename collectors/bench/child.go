package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/collectors/collector"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/stage"
)

// collectorResult is what the collector child reports when stopped.
type collectorResult struct {
	Events uint64        `json:"events"`
	Lost   uint64        `json:"lost"`
	CPU    time.Duration `json:"cpu_ns"`
	Wall   time.Duration `json:"wall_ns"`
	RSS    uint64        `json:"rss_bytes"`
	// Of the RSS at the end: anonymous memory (heap, stacks, the ring
	// buffer) and file pages (the binary's text).
	Anon uint64 `json:"rss_anon_bytes"`
	File uint64 `json:"rss_file_bytes"`
	// Of the file pages: the ring buffer's, mapped from the kernel (its
	// data pages are mapped twice, so they count twice).
	Ring uint64 `json:"rss_ring_bytes"`
}

// collectorChild runs the collector stage, as `weft run` would, in its own
// process (so its CPU and memory are its own, not the NATS server's):
// "ready" on stdout once attached, then on a line on stdin it shuts down
// and prints a collectorResult.
func collectorChild(url string) error {
	ctx := context.Background()
	nc, js, err := natsconn.Connect(ctx, natsconn.Options{URL: url, Name: "weft-bench-collector"}, nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	counters := &stage.Counters{}
	cfg := collector.NewConfig()
	cfg.Metadata.Provider = collector.ProviderNone
	cfg.Required = true
	if p := os.Getenv(collectorEnv + "_PROBES"); p != "" {
		cfg.Probes = strings.Split(p, ",")
	}
	st := collector.New(stage.Settings{Name: "collector", Node: "bench", Counters: counters}, cfg)
	if err := st.Start(ctx, host{js}); err != nil {
		return err
	}
	if path := os.Getenv(collectorEnv + "_CPUPROFILE"); path != "" {
		// For finding where the collector's CPU goes: go tool pprof.
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	c0, t0 := cpuTime(), time.Now()
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return fmt.Errorf("collector child: stdin: %w", err)
		}
		cmd := strings.TrimSpace(line)
		if cmd == "stop" {
			break
		}
		if cmd == "costs" {
			costs, err := st.Collector().HookCosts()
			if err != nil {
				return err
			}
			b, _ := json.Marshal(costs)
			fmt.Printf("costs %s\n", b)
			continue
		}
		if err := command(st, cmd); err != nil {
			return err
		}
		// What was used and read so far: the parent counts what a
		// segment with the hooks attached cost, between two drains.
		fmt.Println("ok", (cpuTime() - c0).Nanoseconds(), counters.EventsIn.Load())
	}
	ring := ringRSS() // before Shutdown unmaps it
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := st.Shutdown(sctx); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(collectorResult{
		Events: counters.EventsIn.Load(), Lost: st.Stats().Lost,
		CPU: cpuTime() - c0, Wall: time.Since(t0), RSS: peakRSS(),
		Anon: procStatus("RssAnon:"), File: procStatus("RssFile:"), Ring: ring,
	})
}

// settle is how long a detached collector is given to publish its last
// batch after its ring buffer is read.
const settle = 50 * time.Millisecond

// command runs one of the parent's commands: attach, detach, or drain
// (wait until what the hooks sent is read and published); detach drains
// too, so the next storm segment runs beside an idle collector, not one
// still catching up.
func command(st *collector.Stage, cmd string) error {
	coll := st.Collector()
	switch cmd {
	case "attach":
		return coll.Resume()
	case "detach":
		if err := coll.Pause(); err != nil {
			return err
		}
		return drain(coll)
	case "drain":
		return drain(coll)
	case "stats-on":
		// The kernel's BPF statistics (two clock reads a run), for the
		// hooks' costs: on for the rest of this process's life.
		if _, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
			return fmt.Errorf("collector child: enable BPF statistics: %w", err)
		}
		return drain(coll)
	}
	return fmt.Errorf("collector child: unknown command %q", cmd)
}

func drain(coll *bpf.Collector) error {
	for deadline := time.Now().Add(10 * time.Second); coll.Buffered() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("collector child: ring buffer not drained")
		}
	}
	time.Sleep(settle)
	return nil
}

type collectorProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startCollector(child StormCommand, o Options, url string, cpus []int) (*collectorProc, error) {
	cmd := child()
	cmd.Env = append(os.Environ(), collectorEnv+"="+url)
	if len(cpus) > 0 {
		cmd.Env = append(cmd.Env, placement{}.env(cpus))
	}
	if o.Probes != nil {
		cmd.Env = append(cmd.Env, collectorEnv+"_PROBES="+strings.Join(o.Probes, ","))
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &collectorProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	line, err := p.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		p.kill()
		return nil, fmt.Errorf("collector child did not start: %q %v", line, err)
	}
	return p, nil
}

// do sends the child a command, waits for it to be done, and returns the
// child's CPU time and the events it read so far.
func (p *collectorProc) do(cmd string) (cpu time.Duration, events uint64, err error) {
	fmt.Fprintln(p.stdin, cmd)
	line, err := p.out.ReadString('\n')
	var ns int64
	if err == nil {
		_, err = fmt.Sscanf(line, "ok %d %d", &ns, &events)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("collector child: %s: %q %v", cmd, line, err)
	}
	return time.Duration(ns), events, nil
}

// costs returns the hooks' costs so far (BPF statistics, after stats-on).
func (p *collectorProc) costs() (map[string]bpf.HookCost, error) {
	fmt.Fprintln(p.stdin, "costs")
	line, err := p.out.ReadString('\n')
	js, ok := strings.CutPrefix(strings.TrimSpace(line), "costs ")
	if err != nil || !ok {
		return nil, fmt.Errorf("collector child: costs: %q %v", line, err)
	}
	var c map[string]bpf.HookCost
	return c, json.Unmarshal([]byte(js), &c)
}

func (p *collectorProc) stop() (collectorResult, error) {
	var r collectorResult
	fmt.Fprintln(p.stdin, "stop")
	err := json.NewDecoder(p.out).Decode(&r)
	if werr := p.cmd.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return r, fmt.Errorf("collector child: %w", err)
	}
	return r, nil
}

func (p *collectorProc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// host is the stage.Host of the collector child.
type host struct{ js jetstream.JetStream }

func (h host) JetStream() jetstream.JetStream { return h.js }
func (h host) Handle(string, http.Handler)    {}
func (h host) Fatal(error)                    {}

// ringRSS is the resident bytes of this process's BPF map mappings (the
// ring buffer), from /proc/self/smaps.
func ringRSS() uint64 {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var n uint64
	inMap := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			inMap = len(f) >= 6 && strings.Contains(f[5], "bpf-map")
			continue
		}
		if inMap && len(f) == 3 && f[0] == "Rss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			n += kb << 10
		}
	}
	return n
}
