package correlate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/weftobs/weft/correlator/correlate"
	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// replica is one correlator replica on its own NATS connection, as a
// separate process would be.
type replica struct {
	st *correlate.Stage
	nc *nats.Conn
	h  *stagetest.Host
}

// replicaConfig is testConfig with the default 3s lease: a lease of a few
// hundred milliseconds runs out on a loaded machine and partitions churn.
func replicaConfig() *correlate.Config {
	c := testConfig()
	c.AckWait, c.Lease = 6*time.Second, 3*time.Second
	return c
}

func startReplica(t *testing.T, s *natstest.Server, parts int, cfg *correlate.Config) *replica {
	t.Helper()
	nc, js := stagetest.Connect(t, s)
	set := settings(cfg)
	set.Inputs = []stage.Stream{{Name: schema.StreamEvents, Partitions: parts}}
	st, err := correlate.New(set)
	if err != nil {
		t.Fatal(err)
	}
	h := stagetest.NewHost(js)
	if err := st.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return &replica{st: st.(*correlate.Stage), nc: nc, h: h}
}

// kill cuts the replica's connection and stops it with nothing drained:
// nothing is flushed, acked, handed back or unpinned, and its membership
// is left to expire, as after SIGKILL.
func (r *replica) kill() {
	r.nc.Close()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.st.Shutdown(dead)
}

// balanced waits until the replicas own disjoint partitions covering all
// n, each owning n/len(rs) or one more.
func balanced(t *testing.T, rs []*replica, n int) {
	t.Helper()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var all []int
		for i, r := range rs {
			o := r.st.Owned()
			if len(o) < n/len(rs) || len(o) > (n+len(rs)-1)/len(rs) {
				return fmt.Errorf("replica %d owns %v", i, o)
			}
			all = append(all, o...)
		}
		slices.Sort(all)
		for p := range n {
			if p >= len(all) || all[p] != p || len(all) != n {
				return fmt.Errorf("partitions owned %v, want each of 0..%d once", all, n-1)
			}
		}
		return nil
	})
}

func callIDs(calls []*schema.Call) []string {
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.GetId()
	}
	slices.Sort(ids)
	return ids
}

// TestReplicasGroundTruth: 1, 2 and 3 replicas over 6 partitions give the
// same calls, equal to the ground truth, none twice; the halves of each
// cross-node connection met on one replica (no partial calls beyond the
// truth's). The app pod deleted after its traffic is ended on CALLS once
// (every partition reads the delete; partition 0 alone publishes it).
func TestReplicasGroundTruth(t *testing.T) {
	const parts = 6
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 200, 3e6)
	appEnd := scenario.T0 + 200*3e6 + 10e6
	sim.PodDown(appEnd, c.App)
	batches := sim.Interleaved(16)
	var first []string
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("replicas=%d", n), func(t *testing.T) {
			s := natstest.Start(t)
			stagetest.Streams(t, s)
			var rs []*replica
			for range n {
				r := startReplica(t, s, parts, replicaConfig())
				defer r.st.Shutdown(context.Background())
				rs = append(rs, r)
			}
			balanced(t, rs, parts)
			stagetest.PublishPartitioned(t, s.JS, batches, parts)
			natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
				return scenario.Compare(sim.Truth, scenario.Fold(stagetest.ReadCalls(t, s.JS)))
			})
			calls := stagetest.ReadCalls(t, s.JS)
			if _, dups := stagetest.Dedupe(calls); dups > 0 {
				t.Errorf("%d calls emitted twice", dups)
			}
			natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				ended := stagetest.ReadItems(t, s.JS, (*schema.CallBatch).GetPodsEnded)
				if len(ended) != 1 || ended[0].GetPod().GetUid() != c.App.GetUid() || ended[0].GetEndedUnixNano() != appEnd ||
					len(ended[0].GetPod().GetContainers()) != 1 {
					return fmt.Errorf("pods ended on CALLS: %v; want the app pod once, with its container, at %d", ended, appEnd)
				}
				return nil
			})
			for i, r := range rs {
				if r.st.Stats().Calls == 0 {
					t.Errorf("replica %d (partitions %v) emitted no call", i, r.st.Owned())
				}
				if errs := r.h.Errors; len(errs) > 0 {
					t.Errorf("replica %d: %v", i, errs)
				}
			}
			ids := callIDs(calls)
			if first == nil {
				first = ids
			} else if !slices.Equal(ids, first) {
				t.Errorf("%d replicas: %d calls, not the %d of one replica", n, len(ids), len(first))
			}
		})
	}
}

// TestReplicaKilled: of three replicas, one is killed mid-stream; its
// partitions move to the other two once its lease runs out, and the calls
// equal the ground truth (those re-emitted carry the same ids and are
// dropped downstream).
func TestReplicaKilled(t *testing.T) {
	const parts = 6
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 300, 3e6)
	batches := sim.Interleaved(8)
	half := len(batches) / 2
	var rs []*replica
	for range 3 {
		r := startReplica(t, s, parts, replicaConfig())
		rs = append(rs, r)
	}
	defer rs[0].st.Shutdown(context.Background())
	defer rs[2].st.Shutdown(context.Background())
	balanced(t, rs, parts)
	stagetest.PublishPartitioned(t, s.JS, batches[:half], parts)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := rs[1].st.Stats().Calls; n < 10 {
			return fmt.Errorf("replica 1: %d calls so far", n)
		}
		return nil
	})
	killed := time.Now()
	rs[1].kill()
	balanced(t, []*replica{rs[0], rs[2]}, parts)
	t.Logf("partitions of the killed replica taken over in %v", time.Since(killed))
	stagetest.PublishPartitioned(t, s.JS, batches[half:], parts)
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	_, dups := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
	t.Logf("calls emitted again after the kill (dropped by id downstream): %d", dups)
}

// TestRollout: three replicas are replaced one by one (a new one started,
// then an old one shut down) while events keep coming; the calls equal
// the ground truth.
func TestRollout(t *testing.T) {
	const parts = 6
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 400, 3e6)
	batches := sim.Interleaved(8)
	var rs []*replica
	for range 3 {
		rs = append(rs, startReplica(t, s, parts, replicaConfig()))
	}
	balanced(t, rs, parts)
	step := len(batches) / 4
	stagetest.PublishPartitioned(t, s.JS, batches[:step], parts)
	for i := range 3 {
		nr := startReplica(t, s, parts, replicaConfig())
		defer nr.st.Shutdown(context.Background())
		if err := rs[0].st.Shutdown(context.Background()); err != nil {
			t.Errorf("shut down replica: %v", err)
		}
		rs = append(rs[1:], nr)
		balanced(t, rs, parts)
		end := (i + 2) * step
		if i == 2 {
			end = len(batches)
		}
		stagetest.PublishPartitioned(t, s.JS, batches[(i+1)*step:end], parts)
	}
	defer func() {
		if t.Failed() {
			dumpConsumers(t, s.JS)
			if dlq, err := s.JS.Stream(context.Background(), schema.StreamDLQ); err == nil {
				if info, err := dlq.Info(context.Background()); err == nil {
					t.Logf("DLQ: %d messages", info.State.Msgs)
				}
			}
			for i, r := range rs {
				t.Logf("replica %d: %+v owned %v", i, r.st.Stats(), r.st.Owned())
			}
		}
	}()
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	_, dups := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
	t.Logf("calls emitted again during the rollout (dropped by id downstream): %d", dups)
}

// TestSpareReplica: of three replicas over two partitions, the one that
// owns none says so (stage.Degrader: on /readyz and as
// weft_stage_degraded{what="partitions"}); the two that own one say
// nothing. When one of them leaves, the spare takes its partition and
// stops saying it.
func TestSpareReplica(t *testing.T) {
	const parts = 2
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	var rs []*replica
	for range 3 {
		r := startReplica(t, s, parts, replicaConfig())
		defer r.st.Shutdown(context.Background())
		rs = append(rs, r)
	}
	spare := func() (int, error) {
		idx := -1
		for i, r := range rs {
			d := r.st.Degraded()
			switch {
			case len(r.st.Owned()) == 0 && len(d) == 1 && strings.HasPrefix(d[0], "partitions: owns none of the 2 of EVENTS (3 replicas live)"):
				if idx >= 0 {
					return -1, fmt.Errorf("replicas %d and %d both stand by", idx, i)
				}
				idx = i
			case len(r.st.Owned()) == 1 && len(d) == 0:
			default:
				return -1, fmt.Errorf("replica %d owns %v and says %q", i, r.st.Owned(), d)
			}
		}
		if idx < 0 {
			return -1, fmt.Errorf("no replica stands by")
		}
		return idx, nil
	}
	var idx int
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() (err error) {
		idx, err = spare()
		return err
	})
	t.Logf("replica %d stands by: %q", idx, rs[idx].st.Degraded())
	left := (idx + 1) % 3
	if err := rs[left].st.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs = slices.Delete(rs, left, left+1)
	balanced(t, rs, parts)
	for i, r := range rs {
		if d := r.st.Degraded(); len(d) > 0 {
			t.Errorf("replica %d owns %v and says %q", i, r.st.Owned(), d)
		}
	}
}
