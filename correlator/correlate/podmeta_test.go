package correlate_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// consumerNames are the partition consumers of a correlator named
// "correlator" over EVENTS in parts partitions.
func consumerNames(parts int) []string {
	if parts <= 1 {
		return []string{"correlator-EVENTS"}
	}
	var out []string
	for p := range parts {
		out = append(out, "correlator-EVENTS-p"+strconv.Itoa(p))
	}
	return out
}

// drained is nil once every partition consumer has been delivered and
// has acked everything on EVENTS.
func drained(js jetstream.JetStream, parts int) error {
	ctx := context.Background()
	for _, name := range consumerNames(parts) {
		c, err := js.Consumer(ctx, schema.StreamEvents, name)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("consumer %s: pending %d, ack pending %d", name, info.NumPending, info.NumAckPending)
		}
	}
	return nil
}

// podMetaMatches checks every call endpoint that names a pod against the
// pods the cluster announced: the name, namespace, node and workload the
// metadata said, not a bare uid.
func podMetaMatches(calls []*schema.Call, pods map[string]*schema.Pod) error {
	var errs []error
	for _, c := range calls {
		for side, e := range map[string]*schema.Endpoint{"client": c.GetClient(), "server": c.GetServer()} {
			p := e.GetPod()
			if p == nil {
				continue
			}
			want := pods[p.GetUid()]
			if want == nil {
				errs = append(errs, fmt.Errorf("call %s: %s pod %q was never announced", c.GetId(), side, p.GetUid()))
				continue
			}
			if p.GetName() != want.GetName() || p.GetNamespace() != want.GetNamespace() || p.GetNode() != want.GetNode() ||
				p.GetWorkload().GetName() != want.GetWorkload().GetName() {
				errs = append(errs, fmt.Errorf("call %s: %s pod %s is %s/%s on %q (workload %q), want %s/%s on %q (workload %q)",
					c.GetId(), side, p.GetUid(), p.GetNamespace(), p.GetName(), p.GetNode(), p.GetWorkload().GetName(),
					want.GetNamespace(), want.GetName(), want.GetNode(), want.GetWorkload().GetName()))
			}
		}
		if len(errs) > 5 {
			break
		}
	}
	return errors.Join(errs...)
}

// TestPodMetadataAfterMove: the pods are announced and every message
// carrying them is acked; then the replica that owned a partition is
// killed (or, with one replica, replaced), so the partition's next owner
// never gets those pod events from its consumer. Connections whose server
// is not instrumented resolve only by address (the broker's pod IP, the
// host-network Redis by its node's address: External), and every pod an
// endpoint names must carry the metadata announced, so the calls equal
// the ground truth: the next owner rebuilt its pod index from the stream
// before it joined a connection.
func TestPodMetadataAfterMove(t *testing.T) {
	for _, tc := range []struct {
		name            string
		parts, replicas int
	}{
		{"one replica restarted", 1, 1},
		{"two replicas, one killed", 2, 2},
		{"three replicas over six partitions, one killed", 6, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			stagetest.Streams(t, s)
			c := scenario.NewCluster()
			sim := scenario.New()
			c.Up(sim)
			var rs []*replica
			for range tc.replicas {
				rs = append(rs, startReplica(t, s, tc.parts, replicaConfig()))
			}
			balanced(t, rs, tc.parts)
			stagetest.PublishPartitioned(t, s.JS, sim.Drain(16), tc.parts)
			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error { return drained(s.JS, tc.parts) })
			for i, r := range rs {
				if r.st.Stats().Pods == 0 {
					t.Fatalf("replica %d (partitions %v) applied no pod event", i, r.st.Owned())
				}
			}

			// The last replica dies; its partitions go to the others, or
			// to a new replica when it was the only one.
			rs[len(rs)-1].kill()
			rs = rs[:len(rs)-1]
			if len(rs) == 0 {
				rs = append(rs, startReplica(t, s, tc.parts, replicaConfig()))
			}
			for _, r := range rs {
				defer r.st.Shutdown(context.Background())
			}
			defer func() {
				for i, r := range rs {
					if errs := r.h.Errors; len(errs) > 0 {
						t.Errorf("replica %d: %v", i, errs)
					}
				}
			}()
			balanced(t, rs, tc.parts)

			afterMove(t, s.JS, c, sim, tc.parts)
		})
	}
}

// clusterPods are the cluster's pods by uid.
func clusterPods(c *scenario.Cluster) map[string]*schema.Pod {
	pods := map[string]*schema.Pod{}
	for _, p := range []*schema.Pod{c.App, c.Broker, c.SidecarPod, c.Redis} {
		pods[p.GetUid()] = p
	}
	return pods
}

// afterMove publishes traffic after a partition moved — the usual rounds,
// and the app dialing the broker's pod IP and Redis's address with no
// collector on the server's side — and checks the calls against the
// ground truth and every endpoint's pod against the metadata announced.
func afterMove(t *testing.T, js jetstream.JetStream, c *scenario.Cluster, sim *scenario.Sim, parts int) {
	t.Helper()
	c.Traffic(sim, 40, 3e6)
	for i := range 40 {
		t0 := scenario.T0 + 1e9 + uint64(i)*3e6
		port := uint16(50000 + 2*i)
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: c.BrokerProc, NoServer: true,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, port), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Start: t0, Dur: 1e6, Sent: 10, Received: 20})
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: c.RedisProc, NoServer: true, ServerTruth: "ext:" + c.RedisAddr.String(),
			ClientAddr: netip.AddrPortFrom(c.AppAddr, port+1), ServerAddr: netip.AddrPortFrom(c.RedisAddr, 6379),
			Start: t0 + 1e5, Dur: 1e6, Sent: 3, Received: 4})
	}
	stagetest.PublishPartitioned(t, js, sim.Drain(8), parts)
	natstest.CheckFor(t, 40*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, js))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
	calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, js))
	if err := podMetaMatches(calls, clusterPods(c)); err != nil {
		t.Error(err)
	}
}

// TestProcessPodMetadataAfterKill: as TestPodMetadataAfterMove, with
// `weft run --stage correlator` processes and SIGKILL: two processes over
// two partitions have acked the pod events when one is killed; the other
// takes its partition and resolves by address as the killed one would
// have.
func TestProcessPodMetadataAfterKill(t *testing.T) {
	const parts = 2
	s := natstest.Start(t)
	topo := processTopology(t, parts)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	ps := []*corrProc{startCorrelator(t, s.URL(), topo, "corr-0"), startCorrelator(t, s.URL(), topo, "corr-1")}
	procsBalanced(t, ps, parts)
	stagetest.PublishPartitioned(t, s.JS, sim.Drain(16), parts)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error { return drained(s.JS, parts) })
	if err := ps[1].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	procsBalanced(t, ps[:1], parts)
	afterMove(t, s.JS, c, sim, parts)
	if !strings.Contains(ps[0].logs(), "pod_events_rebuilt=4") {
		t.Errorf("corr-0 did not log a rebuild of the 4 pod events when it took corr-1's partition:\n%s", ps[0].logs())
	}
}

// TestPodEventsAppliedOnce: a replica started on a stream that already
// holds pod events (a new durable delivers everything) gets them from the
// rebuild and passes them over when its consumer delivers them; a pod
// event published after the rebuild comes through the consumer, once per
// partition.
func TestPodEventsAppliedOnce(t *testing.T) {
	const parts = 2
	s := natstest.Start(t)
	stagetest.Streams(t, s)
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	stagetest.PublishPartitioned(t, s.JS, sim.Drain(2), parts) // two messages per node
	r := startReplica(t, s, parts, replicaConfig())
	defer r.st.Shutdown(context.Background())
	balanced(t, []*replica{r}, parts)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error { return drained(s.JS, parts) })
	if n := r.st.Stats().Pods; n != 0 {
		t.Errorf("%d pod events applied from the consumer, want 0: the rebuild applied them", n)
	}
	late := &schema.Pod{Uid: "uid-late", Name: "late-0", Namespace: "shop", Node: "node-b", Ips: []string{"10.0.2.9"}}
	sim.PodUp(scenario.T0+2e9, late)
	stagetest.PublishPartitioned(t, s.JS, sim.Drain(16), parts)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := r.st.Stats().Pods; n != parts {
			return fmt.Errorf("%d pod events applied from the consumer, want %d (one per partition)", n, parts)
		}
		return drained(s.JS, parts)
	})
	// Both the rebuilt pods and the late one resolve by address.
	for i := range 8 {
		t0 := scenario.T0 + 3e9 + uint64(i)*3e6
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: c.BrokerProc, NoServer: true,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(40000+2*i)), ServerAddr: netip.AddrPortFrom(c.BrokerAddr, 4222),
			Start: t0, Dur: 1e6, Sent: 1, Received: 2})
		sim.TCP(scenario.Conn{Client: c.AppProc, Server: scenario.Proc{Node: "node-b", Pod: late, Pid: 9, Exe: "/late"}, NoServer: true,
			ClientAddr: netip.AddrPortFrom(c.AppAddr, uint16(40001+2*i)), ServerAddr: netip.AddrPortFrom(netip.MustParseAddr("10.0.2.9"), 8080),
			Start: t0 + 1e5, Dur: 1e6, Sent: 3, Received: 4})
	}
	stagetest.PublishPartitioned(t, s.JS, sim.Drain(8), parts)
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		calls, _ := stagetest.Dedupe(stagetest.ReadCalls(t, s.JS))
		return scenario.Compare(sim.Truth, scenario.Fold(calls))
	})
}

// TestPodNewsAfterMove: a pod changed (its container named) and a pod
// deleted while partition 0 has no owner (between a replica's stop and
// its successor's start) reach CALLS once each: the successor's rebuild
// applies them to its index, and its consumer's delivery of their
// messages publishes what they say, though it passes over their events.
func TestPodNewsAfterMove(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts int
		kill  bool
	}{
		{"restarted after a shutdown", 1, false},
		{"two partitions, killed", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			stagetest.Streams(t, s)
			c := scenario.NewCluster()
			sim := scenario.New()
			c.Up(sim)
			early := &schema.Pod{Uid: "uid-report", Name: "report-1", Namespace: "batch", Node: "node-a", Ips: []string{"10.0.1.20"}}
			named := proto.Clone(early).(*schema.Pod)
			named.Containers = []*schema.Container{{Id: "c-report", Name: "report", Image: "example/report:1"}}
			sim.PodUp(scenario.T0, early)
			c.Traffic(sim, 5, 3e6)
			r := startReplica(t, s, tc.parts, replicaConfig())
			balanced(t, []*replica{r}, tc.parts)
			stagetest.PublishPartitioned(t, s.JS, sim.Drain(16), tc.parts)
			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error { return drained(s.JS, tc.parts) })
			if tc.kill {
				r.kill()
			} else if err := r.st.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}

			appEnd := scenario.T0 + 2e9
			sim.PodUp(scenario.T0+1e9, named)
			sim.PodDown(appEnd, c.App)
			stagetest.PublishPartitioned(t, s.JS, sim.Drain(16), tc.parts)
			r2 := startReplica(t, s, tc.parts, replicaConfig())
			defer r2.st.Shutdown(context.Background())
			balanced(t, []*replica{r2}, tc.parts)
			natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error { return drained(s.JS, tc.parts) })
			changed := stagetest.ReadItems(t, s.JS, (*schema.CallBatch).GetPodsChanged)
			if len(changed) != 1 || !proto.Equal(changed[0].GetPod(), named) || changed[0].GetChangedUnixNano() != scenario.T0+1e9 {
				t.Errorf("pods changed on CALLS: %v; want the report pod once, its container named", changed)
			}
			ended := stagetest.ReadItems(t, s.JS, (*schema.CallBatch).GetPodsEnded)
			if len(ended) != 1 || ended[0].GetPod().GetUid() != c.App.GetUid() || ended[0].GetEndedUnixNano() != appEnd {
				t.Errorf("pods ended on CALLS: %v; want the app pod once, at %d", ended, appEnd)
			}
			if errs := r2.h.Errors; len(errs) > 0 {
				t.Errorf("replica: %v", errs)
			}
		})
	}
}
