package correlate

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/internal/stagetest"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
)

// benchPod is pod i of a fleet over 100 nodes, as the metadata provider
// describes one: labels, a ReplicaSet under a Deployment, two containers.
func benchPod(i int) *schema.Pod {
	rs := &schema.OwnerRef{Kind: "ReplicaSet", Name: fmt.Sprintf("svc-%d-7d9f", i%200), Uid: fmt.Sprintf("rs-%d", i%200), Controller: true}
	return &schema.Pod{
		Uid: fmt.Sprintf("uid-%08d", i), Name: fmt.Sprintf("svc-%d-7d9f-%05d", i%200, i), Namespace: "ns-" + strconv.Itoa(i%20),
		Node: "node-" + strconv.Itoa(i%100), Ips: []string{fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)},
		Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i%200), "pod-template-hash": "7d9f", "tier": "backend"},
		Owners: []*schema.OwnerRef{rs}, Workload: &schema.OwnerRef{Kind: "Deployment", Name: fmt.Sprintf("svc-%d", i%200), Uid: fmt.Sprintf("dep-%d", i%200), Controller: true},
		Containers: []*schema.Container{
			{Id: fmt.Sprintf("c-%08d-a", i), Name: "app", Image: "example/svc:1.2.3"},
			{Id: fmt.Sprintf("c-%08d-b", i), Name: "proxy", Image: "example/proxy:2"},
		},
	}
}

// publishPods stores n pod upserts on EVENTS as collectors announce them
// when they first see each pod: one event per message (the worst case for
// the rebuild), each node on its own subject.
func publishPods(b *testing.B, js jetstream.JetStream, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range n {
		p := benchPod(i)
		batch := &schema.EventBatch{SchemaVersion: schema.Version,
			Origin: &schema.Origin{Node: p.GetNode(), BootId: "boot", Epoch: 1, Seq: uint64(i + 1), Stage: "collector"},
			Events: []*schema.Event{{TimeUnixNano: scenario.T0 + uint64(i), Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: p}}}}}
		data, err := proto.Marshal(batch)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(schema.EventSubject(p.GetNode(), schema.KindPod))
		m.Data = data
		m.Header.Set(schema.HeaderType, schema.TypeName(batch))
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publish pods: ", ctx.Err())
	}
}

// BenchmarkPartitionStart is how long a replica takes to start the
// partitions it is given (6, all at once: a replica's start, or the
// survivor of two taking over) on an EVENTS stream holding n pods'
// events and connection traffic, with the pod index rebuild and without
// it (the baseline: what a partition start cost before), in the same run
// on the same stream. Partitions are stopped between starts.
//
//	go test -run '^$' -bench BenchmarkPartitionStart -benchtime 5x ./correlator/correlate/
func BenchmarkPartitionStart(b *testing.B) {
	const parts = 6
	for _, n := range []int{0, 1000, 10000, 50000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			s := natstest.Start(b)
			stagetest.Streams(b, s)
			// Connection traffic around the pod events: the rebuild's
			// filter must pass over it.
			c := scenario.NewCluster()
			sim := scenario.New()
			c.Traffic(sim, 2000, 3e6)
			stagetest.PublishPartitioned(b, s.JS, sim.Interleaved(64), parts)
			publishPods(b, s.JS, n)
			cfg := NewConfig()
			if err := cfg.Validate(); err != nil {
				b.Fatal(err)
			}
			st := &Stage{set: stage.Settings{Name: "correlator", Node: "ctl", Counters: &stage.Counters{}},
				cfg: *cfg, log: slog.New(slog.DiscardHandler), input: stage.Stream{Name: schema.StreamEvents, Partitions: parts}, n: parts,
				js: s.JS, parts: map[int]*part{}}
			all := []int{0, 1, 2, 3, 4, 5}
			ctx := context.Background()
			start := func(rebuild bool) time.Duration {
				st.noRebuild = !rebuild
				t0 := time.Now()
				if err := st.assign(ctx, all); err != nil {
					b.Fatal(err)
				}
				d := time.Since(t0)
				if rebuild {
					for _, p := range st.parts {
						if got := p.j.Pods().Len(); got != n {
							b.Fatalf("partition %d: %d pods after the rebuild, want %d", p.k, got, n)
						}
					}
				}
				if err := st.assign(ctx, nil); err != nil {
					b.Fatal(err)
				}
				return d
			}
			start(false) // creates the durables: not part of either figure
			var with, without time.Duration
			b.ResetTimer()
			for range b.N {
				without += start(false)
				with += start(true)
			}
			b.StopTimer()
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
			b.ReportMetric(per(without), "ms/start-baseline")
			b.ReportMetric(per(with), "ms/start-rebuild")
			b.ReportMetric(per(with-without), "ms/rebuild")
			if without > 0 {
				b.ReportMetric(float64(with)/float64(without), "x-baseline")
			}
			if n > 0 && with > without {
				b.ReportMetric(float64(n)/((with-without).Seconds()/float64(b.N)), "pods/s")
			}
		})
	}
}
