package correlate_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// cpuTime is the user+system CPU a process has used so far (from
// /proc/<pid>/stat, in clock ticks of 10ms).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// allAcked reports whether every partition consumer has acked all.
func allAcked(js jetstream.JetStream, parts int) (bool, error) {
	ctx := context.Background()
	for p := range parts {
		c, err := js.Consumer(ctx, schema.StreamEvents, "correlator-EVENTS-p"+strconv.Itoa(p))
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false, err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return false, nil
		}
	}
	return true, nil
}

// BenchmarkProcessReplicas is the correlator's throughput with 1, 2 and 3
// replicas as separate `weft run --stage correlator` processes on one
// embedded NATS (in this test process), over 6 partitions: events/s from
// the moment the events are published until every partition has acked
// them all, the CPU each process used, and the ratio to one replica in the
// same run. Then the rebalancing time: one of three processes is killed
// (SIGKILL) and the time until its partitions are assigned to the others
// and until every partition has acked everything again is reported.
//
//	go test -run '^$' -bench BenchmarkProcessReplicas -benchtime 1x ./correlator/correlate/
func BenchmarkProcessReplicas(b *testing.B) {
	const parts = 6
	rounds := 15000
	if v, err := strconv.Atoi(os.Getenv("WEFT_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, rounds, 3e6)
	batches := sim.Interleaved(256)
	events, calls := 0, 0
	for _, bt := range batches {
		events += len(bt.GetEvents())
	}
	for _, tot := range sim.Truth {
		calls += int(tot.Count)
	}
	var base float64
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			for range b.N {
				rate, cpus := runReplicas(b, n, parts, batches, events, calls)
				if n == 1 {
					base = rate
				}
				b.ReportMetric(rate, "events/s")
				if base > 0 {
					b.ReportMetric(rate/base, "x1replica")
				}
				var sum time.Duration
				for i, c := range cpus {
					b.ReportMetric(c.Seconds(), fmt.Sprintf("cpu-s-proc%d", i))
					sum += c
				}
				b.Logf("%d replicas: %d events, %.0f events/s (%.2fx one replica), CPU per process %v (total %v)", n, events, rate, rate/base, cpus, sum)
			}
		})
	}
	b.Run("rebalance-after-kill", func(b *testing.B) {
		for range b.N {
			assigned, resumed := runKill(b, parts, batches)
			b.ReportMetric(assigned.Seconds(), "s-to-assign")
			b.ReportMetric(resumed.Seconds(), "s-to-drain")
			b.Logf("after SIGKILL of one of 3 replicas: partitions assigned again in %v, every partition drained in %v", assigned, resumed)
		}
	})
}

// countCalls adds the calls in CALLS messages after sequence seen to items
// (from their Weft-Items header).
func countCalls(b *testing.B, js jetstream.JetStream, seen, items uint64) (uint64, uint64) {
	ctx := context.Background()
	st, err := js.Stream(ctx, schema.StreamCalls)
	if err != nil {
		return seen, items
	}
	info, err := st.Info(ctx)
	if err != nil {
		return seen, items
	}
	for seq := seen + 1; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := strconv.ParseUint(m.Header.Get(schema.HeaderItems), 10, 64)
		items += n
		seen = seq
	}
	return seen, items
}

func runReplicas(b *testing.B, n, parts int, batches []*schema.EventBatch, events, calls int) (float64, []time.Duration) {
	s := natstest.Start(b)
	topo := processTopology(b, parts)
	var ps []*corrProc
	for i := range n {
		ps = append(ps, startCorrelator(b, s.URL(), topo, fmt.Sprintf("corr-%d", i)))
	}
	procsBalanced(b, ps, parts)
	before := make([]time.Duration, n)
	for i, p := range ps {
		before[i] = cpuTime(p.cmd.Process.Pid)
	}
	msgs := stagetest.PartitionMessages(b, batches, parts)
	start := time.Now()
	publishAsync(b, s.JS, msgs)
	// Throughput is to the last call out; acks of the last messages wait
	// for timers (a new owner's hold-off), which say nothing of capacity.
	var seen, items uint64
	natstest.CheckFor(b, 10*time.Minute, 20*time.Millisecond, func() error {
		seen, items = countCalls(b, s.JS, seen, items)
		if items < uint64(calls) {
			return fmt.Errorf("%d of %d calls out", items, calls)
		}
		return nil
	})
	el := time.Since(start)
	cpus := make([]time.Duration, n)
	for i, p := range ps {
		cpus[i] = cpuTime(p.cmd.Process.Pid) - before[i]
		b.Logf("%s: %d assignments, %d leases lost", p.node, strings.Count(p.logs(), "partitions assigned"), strings.Count(p.logs(), "lease lost"))
	}
	return float64(events) / el.Seconds(), cpus
}

func runKill(b *testing.B, parts int, batches []*schema.EventBatch) (assigned, drained time.Duration) {
	s := natstest.Start(b)
	topo := processTopology(b, parts)
	var ps []*corrProc
	for i := range 3 {
		ps = append(ps, startCorrelator(b, s.URL(), topo, fmt.Sprintf("corr-%d", i)))
	}
	procsBalanced(b, ps, parts)
	stagetest.PublishPartitioned(b, s.JS, batches[:len(batches)/2], parts)
	killed := time.Now()
	if err := ps[1].cmd.Process.Kill(); err != nil {
		b.Fatal(err)
	}
	stagetest.PublishPartitioned(b, s.JS, batches[len(batches)/2:], parts)
	procsBalanced(b, []*corrProc{ps[0], ps[2]}, parts)
	assigned = time.Since(killed)
	natstest.CheckFor(b, 10*time.Minute, 20*time.Millisecond, func() error {
		ok, err := allAcked(s.JS, parts)
		if err != nil || !ok {
			return fmt.Errorf("not all acked (%v)", err)
		}
		return nil
	})
	return assigned, time.Since(killed)
}

// publishAsync publishes msgs without waiting for each ack, so the
// publishing side outruns the correlators being measured.
func publishAsync(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg) {
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish acks did not come within a minute")
	}
}
