// Package bench measures the streams path on this machine: events through
// the batched publisher into a file-backed stream on the embedded server,
// consumed back with a durable consumer, and — in the same run, so the
// figure is a ratio — the same events published one per message with plain
// JetStream async publish. `weft bench streams` and the package's Go
// benchmarks both run it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/embedded"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
)

// Options configure a streams benchmark.
type Options struct {
	// Events is how many events each phase moves.
	Events int
	// Dir holds the file store; default a temp dir removed afterwards.
	Dir string
	// BatchEvents is the publisher's events per message (default 1024).
	BatchEvents int
}

// Result is what `weft bench streams --json` prints.
type Result struct {
	Events                      int     `json:"events"`
	EventBytes                  float64 `json:"event_bytes"`
	BatchEvents                 int     `json:"batch_events"`
	PublishEventsPerSec         float64 `json:"publish_events_per_sec"`
	ConsumeEventsPerSec         float64 `json:"consume_events_per_sec"`
	BaselinePublishEventsPerSec float64 `json:"baseline_publish_events_per_sec"`
	PublishSpeedupOverBaseline  float64 `json:"publish_speedup_over_baseline"`
	PublisherMaxBufferedBytes   int64   `json:"publisher_max_buffered_bytes"`
	PublisherPeakBufferedBytes  int64   `json:"publisher_peak_buffered_bytes"`
	Storage                     string  `json:"storage"`
	GOMAXPROCS                  int     `json:"gomaxprocs"`
	PublishSeconds              float64 `json:"publish_seconds"`
	ConsumeSeconds              float64 `json:"consume_seconds"`
	BaselinePublishSeconds      float64 `json:"baseline_publish_seconds"`
}

// Events returns n distinct, realistic TCP close events (about 150 bytes
// encoded), so benchmarks encode real work rather than one repeated value.
func Events(n int) []*schema.Event {
	out := make([]*schema.Event, n)
	base := time.Now().UnixNano()
	for i := range out {
		src := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		dst := netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 4)})
		out[i] = &schema.Event{
			TimeUnixNano: uint64(base + int64(i)*1000),
			Task: &schema.Task{
				Pid: uint32(1000 + i%30000), Tid: uint32(1000 + i%30000), Comm: "app-server",
				CgroupId: uint64(4000 + i%64), ContainerId: fmt.Sprintf("%032x", i%64),
				PodUid: fmt.Sprintf("5f0c2a52-7b1e-4c7e-9d1f-%012x", i%64), Attribution: schema.Attribution_ATTRIBUTION_POD,
			},
			Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{
				Phase: schema.TCPPhase_TCP_PHASE_CLOSE, Role: schema.Role_ROLE_CLIENT,
				LocalAddr: src.AsSlice(), LocalPort: uint32(30000 + i%30000),
				RemoteAddr: dst.AsSlice(), RemotePort: 4222,
				BytesSent: uint64(100 + i%5000), BytesReceived: uint64(200 + i%9000),
				DurationNs: uint64(1e6 + i%1e6), SockCookie: uint64(i) * 2654435761,
				StartUnixNano: uint64(base + int64(i)*1000 - 1e6),
			}},
		}
	}
	return out
}

// Run runs the benchmark: batched publish, consume+ack, and the baseline.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Events <= 0 {
		o.Events = 1_000_000
	}
	if o.BatchEvents <= 0 {
		o.BatchEvents = 1024
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "weft-bench-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	srv, err := embedded.Start(embedded.Options{DataDir: dir, Listen: "127.0.0.1:-1", ServerName: "bench"})
	if err != nil {
		return Result{}, err
	}
	defer srv.Stop()
	nc, js, err := natsconn.Connect(ctx, natsconn.Options{URL: srv.URL(), Name: "weft bench"}, nil)
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()

	events := Events(o.Events)
	size := 0
	for _, e := range events[:min(len(events), 10000)] {
		size += proto.Size(e)
	}
	res := Result{
		Events: o.Events, EventBytes: float64(size) / float64(min(len(events), 10000)),
		BatchEvents: o.BatchEvents, Storage: "file", GOMAXPROCS: runtime.GOMAXPROCS(0),
	}

	// Baseline first, on its own stream: one event per message.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BASELINE", Subjects: []string{"baseline.>"}, Storage: jetstream.FileStorage}); err != nil {
		return res, err
	}
	d, err := baselinePublish(ctx, nc, events)
	if err != nil {
		return res, err
	}
	res.BaselinePublishSeconds = d.Seconds()
	res.BaselinePublishEventsPerSec = float64(o.Events) / d.Seconds()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"weft.events.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		return res, err
	}
	cfg := publish.Config{Stage: "bench", Node: "bench", MaxBatchItems: o.BatchEvents}
	d, st, err := batchedPublish(ctx, nc, cfg, events)
	if err != nil {
		return res, err
	}
	res.PublishSeconds = d.Seconds()
	res.PublishEventsPerSec = float64(o.Events) / d.Seconds()
	res.PublishSpeedupOverBaseline = res.PublishEventsPerSec / res.BaselinePublishEventsPerSec
	res.PublisherPeakBufferedBytes = st.PeakBufferedBytes
	res.PublisherMaxBufferedBytes = publish.DefaultMaxBufferedBytes

	d, err = consumeAll(ctx, js, o.Events)
	if err != nil {
		return res, err
	}
	res.ConsumeSeconds = d.Seconds()
	res.ConsumeEventsPerSec = float64(o.Events) / d.Seconds()
	return res, nil
}

func baselinePublish(ctx context.Context, nc *nats.Conn, events []*schema.Event) (time.Duration, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	// Encoding is part of the work in both phases.
	start := time.Now()
	var buf []byte
	for i, e := range events {
		buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], e)
		if err != nil {
			return 0, err
		}
		data := make([]byte, len(buf))
		copy(data, buf)
		if _, err := js.PublishAsync("baseline.n.tcp", data, jetstream.WithMsgID(fmt.Sprintf("b:%d", i)), jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, fmt.Errorf("baseline publish %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

func batchedPublish(ctx context.Context, nc *nats.Conn, cfg publish.Config, events []*schema.Event) (time.Duration, publish.Stats, error) {
	p, err := publish.New(nc, cfg, nil, nil)
	if err != nil {
		return 0, publish.Stats{}, err
	}
	subject := schema.EventSubject("bench", schema.KindTCP)
	start := time.Now()
	for _, e := range events {
		if err := p.Publish(ctx, subject, e); err != nil {
			return 0, publish.Stats{}, err
		}
	}
	if err := p.Close(ctx); err != nil {
		return 0, publish.Stats{}, err
	}
	d := time.Since(start)
	st := p.Stats()
	if st.ItemsPublished != uint64(len(events)) {
		return 0, st, fmt.Errorf("published %d of %d events", st.ItemsPublished, len(events))
	}
	return d, st, nil
}

func consumeAll(ctx context.Context, js jetstream.JetStream, want int) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	var once atomic.Bool
	handler := func(_ context.Context, m jetstream.Msg) error {
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			return consume.Permanent(err)
		}
		if got.Add(int64(len(b.Events))) >= int64(want) && once.CompareAndSwap(false, true) {
			close(done)
		}
		return nil
	}
	start := time.Now()
	c, err := consume.Start(ctx, js, consume.Config{Stage: "bench", Stream: "EVENTS", PullBatch: 256}, handler, nil, nil)
	if err != nil {
		return 0, err
	}
	defer c.Stop(context.Background())
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, errors.New("consume: timed out")
	}
	return time.Since(start), nil
}
