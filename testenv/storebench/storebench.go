// Package storebench measures what weft's streams cost on disk: the bytes
// each event and each call takes as JetStream stores it, under every
// storage choice weft makes, in one run so the figures are ratios. Traffic
// is `weft up --demo`'s (collectors/synthetic), correlated by the
// correlator's joiner; each variant gets its own embedded server, real
// stream names and subjects, and the publisher's batching at the demo's
// rate. `weft bench storage` runs it.
//
// Two sizes are reported per stream. Stored bytes are JetStream's own
// account (stream info State.Bytes): what maxBytes and the account limits
// count, and so what decides retention under a byte cap. Disk bytes are
// the message block files, where S2 compression acts: JetStream compresses
// a block when it is full, so the ratio is taken over full blocks (an
// uncompressed block file is exactly the stored bytes of its messages,
// which the uncompressed variant checks) and applied to the whole stream.
package storebench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/collectors/synthetic"
	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/embedded"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
)

// Options configure a run. Zero values take the defaults.
type Options struct {
	// Events is about how many events each variant publishes (default
	// 400,000: several 8 MiB blocks of EVENTS and of CALLS).
	Events int
	// Nodes and Pods shape the simulated cluster (default 1 and 8, as
	// `weft up --demo`, at its 2,000 events/s).
	Nodes, Pods int
	// EventsPerBatch and CallsPerBatch are the publisher's items per
	// message. Defaults 100 and 25: what 2,000 events/s (the demo's rate,
	// a call per four events) put in one 50 ms publisher linger.
	EventsPerBatch, CallsPerBatch int
	// Dir holds the file stores; default a temp dir removed afterwards.
	Dir string
}

func (o *Options) setDefaults() {
	if o.Events <= 0 {
		o.Events = 400_000
	}
	if o.Nodes <= 0 {
		o.Nodes = 1
	}
	if o.Pods <= 0 {
		o.Pods = 8
	}
	if o.EventsPerBatch <= 0 {
		o.EventsPerBatch = 100
	}
	if o.CallsPerBatch <= 0 {
		o.CallsPerBatch = 25
	}
}

// Stream is one stream's size in one variant.
type Stream struct {
	Messages uint64 `json:"messages"`
	Items    int    `json:"items"` // events or calls
	// StoredBytes is State.Bytes: what maxBytes counts.
	StoredBytes uint64 `json:"stored_bytes"`
	// DiskBytes is StoredBytes at the disk ratio of full blocks.
	DiskBytes float64 `json:"disk_bytes"`
	// DiskRatio is block files ÷ stored bytes over the full blocks.
	DiskRatio float64 `json:"disk_ratio"`
	// FullBlocks is how many blocks the ratio was taken over.
	FullBlocks int `json:"full_blocks"`
	// StoredPerItem and DiskPerItem are bytes per event or call.
	StoredPerItem float64 `json:"stored_per_item"`
	DiskPerItem   float64 `json:"disk_per_item"`
}

// Variant is one storage choice and what it cost.
type Variant struct {
	Name         string `json:"name"`
	Compression  string `json:"compression"`
	CompactCalls bool   `json:"compact_calls"`
	Events       Stream `json:"events"`
	Calls        Stream `json:"calls"`
}

// Result is what `weft bench storage --json` prints. Variants[0] is the
// baseline (no compression, calls written whole, as before), the last is
// weft's default.
type Result struct {
	Events         int       `json:"events"`
	Calls          int       `json:"calls"`
	CallsPerEvent  float64   `json:"calls_per_event"`
	EventsPerBatch int       `json:"events_per_batch"`
	CallsPerBatch  int       `json:"calls_per_batch"`
	Variants       []Variant `json:"variants"`
}

// Variants are the storage choices measured, baseline first.
var Variants = []Variant{
	{Name: "baseline (none, whole calls)", Compression: topology.CompressionNone},
	{Name: "compact calls", Compression: topology.CompressionNone, CompactCalls: true},
	{Name: "s2", Compression: topology.CompressionS2},
	{Name: "s2 + compact calls (default)", Compression: topology.CompressionS2, CompactCalls: true},
}

// Run measures every variant.
func Run(ctx context.Context, o Options) (Result, error) {
	o.setDefaults()
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "weft-storebench-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	res := Result{Events: o.Events, EventsPerBatch: o.EventsPerBatch, CallsPerBatch: o.CallsPerBatch}
	for i, v := range Variants {
		got, err := runVariant(ctx, o, filepath.Join(dir, strconv.Itoa(i)), v)
		if err != nil {
			return res, fmt.Errorf("variant %s: %w", v.Name, err)
		}
		res.Variants = append(res.Variants, got)
	}
	res.Events = res.Variants[0].Events.Items
	res.Calls = res.Variants[0].Calls.Items
	res.CallsPerEvent = float64(res.Calls) / float64(res.Variants[0].Events.Items)
	return res, nil
}

func runVariant(ctx context.Context, o Options, dir string, v Variant) (Variant, error) {
	srv, err := embedded.Start(embedded.Options{DataDir: dir, Listen: "127.0.0.1:-1", ServerName: "storebench"})
	if err != nil {
		return v, err
	}
	defer srv.Stop()
	nc, js, err := natsconn.Connect(ctx, natsconn.Options{URL: srv.URL(), Name: "weft bench storage"}, nil)
	if err != nil {
		return v, err
	}
	defer nc.Close()
	for _, s := range []*topology.Stream{
		{Name: schema.StreamEvents, Subjects: []string{schema.EventsPrefix + ">"}, Compression: v.Compression},
		{Name: schema.StreamCalls, Subjects: []string{schema.CallsPrefix + ">"}, Compression: v.Compression},
	} {
		cfg, _ := provision.StreamConfig(s, provision.Options{MaxReplicas: 1})
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return v, fmt.Errorf("create %s: %w", s.Name, err)
		}
	}
	newPub := func(typ proto.Message, items int, perBatch func() func(proto.Message) proto.Message) (*publish.Publisher, error) {
		return publish.New(nc, publish.Config{Stage: "storebench", Node: "node", Type: typ,
			MaxBatchItems: items, MaxBatchBytes: 1 << 20, Linger: time.Hour, PerBatch: perBatch}, nil, nil)
	}
	evPub, err := newPub(&schema.EventBatch{}, o.EventsPerBatch, nil)
	if err != nil {
		return v, err
	}
	var perBatch func() func(proto.Message) proto.Message
	if v.CompactCalls {
		perBatch = schema.NewCallCompactor // as the correlator publishes
	}
	callPub, err := newPub(&schema.CallBatch{}, o.CallsPerBatch, perBatch)
	if err != nil {
		return v, err
	}
	calls := 0
	j := join.New(join.Config{Emit: func(c *schema.Call) error {
		calls++
		node := c.GetClient().GetNode()
		return callPub.Publish(ctx, schema.CallSubject(node), c)
	}})
	// The demo's cluster, in simulated time: 2,000 events/s is 500 short
	// calls/s (four events each), stepped every 10 ms.
	g := synthetic.NewGenerator("node", synthetic.Options{Nodes: o.Nodes, Pods: o.Pods, CallsPerSecond: 500})
	var hold join.Hold
	events := 0
	var last uint64
	feed := func(p synthetic.Published) error {
		events++
		if err := evPub.Publish(ctx, p.Subject, p.Event); err != nil {
			return err
		}
		// The generator reuses its event; the joiner keeps tasks.
		ev := proto.Clone(p.Event).(*schema.Event)
		if err := j.Feed(strings.Split(p.Subject, ".")[2], ev, &hold); err != nil {
			return err
		}
		last = ev.GetTimeUnixNano()
		if events%1000 == 0 {
			return j.Advance(last)
		}
		return nil
	}
	now := time.Unix(1_800_000_000, 0)
	for events < o.Events {
		now = now.Add(10 * time.Millisecond)
		for _, p := range g.Step(now) {
			if err := feed(p); err != nil {
				return v, err
			}
		}
	}
	for _, p := range g.Stop(now.Add(10 * time.Millisecond)) {
		if err := feed(p); err != nil {
			return v, err
		}
	}
	if err := j.Advance(last + uint64(time.Minute)); err != nil {
		return v, err
	}
	for _, p := range []*publish.Publisher{evPub, callPub} {
		if err := p.Close(ctx); err != nil {
			return v, err
		}
	}
	storeDir := filepath.Join(dir, "jetstream")
	if v.Events, err = measure(ctx, js, storeDir, schema.StreamEvents, events); err != nil {
		return v, err
	}
	if v.Calls, err = measure(ctx, js, storeDir, schema.StreamCalls, calls); err != nil {
		return v, err
	}
	return v, nil
}

// measure sizes a stream of items items.
func measure(ctx context.Context, js jetstream.JetStream, storeDir, name string, items int) (Stream, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return Stream{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Stream{}, err
	}
	out := Stream{Messages: info.State.Msgs, Items: items, StoredBytes: info.State.Bytes}
	// JetStream compresses a full block in the background: wait until the
	// full blocks' size settles.
	var sealed, open int64
	var n int
	var prev int64 = -1
	deadline := time.Now().Add(30 * time.Second)
	for {
		sealed, open, n, err = blocks(storeDir, name)
		if err != nil {
			return out, err
		}
		if sealed == prev || time.Now().After(deadline) {
			break
		}
		prev = sealed
		time.Sleep(250 * time.Millisecond)
	}
	if n == 0 {
		return out, fmt.Errorf("stream %s: no full block yet (%d bytes stored): publish more events", name, info.State.Bytes)
	}
	out.FullBlocks = n
	out.DiskRatio = float64(sealed) / float64(int64(info.State.Bytes)-open)
	out.DiskBytes = float64(info.State.Bytes) * out.DiskRatio
	out.StoredPerItem = float64(info.State.Bytes) / float64(items)
	out.DiskPerItem = out.DiskBytes / float64(items)
	return out, nil
}

// blocks returns the bytes of a stream's full block files, of its last
// (open) one, and how many full ones there are.
func blocks(storeDir, stream string) (sealed, open int64, full int, err error) {
	// <store dir>/jetstream/<account>/streams/<stream>/msgs
	dirs, err := filepath.Glob(filepath.Join(storeDir, "jetstream", "*", "streams", stream, "msgs"))
	if err != nil || len(dirs) != 1 {
		return 0, 0, 0, fmt.Errorf("stream %s: its block directory under %s: %v %v", stream, storeDir, dirs, err)
	}
	files, err := filepath.Glob(filepath.Join(dirs[0], "*.blk"))
	if err != nil {
		return 0, 0, 0, err
	}
	type blk struct {
		index int
		size  int64
	}
	var bs []blk
	for _, f := range files {
		i, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".blk"))
		if err != nil {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // replaced by its compressed copy meanwhile
			}
			return 0, 0, 0, err
		}
		bs = append(bs, blk{i, fi.Size()})
	}
	if len(bs) == 0 {
		return 0, 0, 0, fmt.Errorf("stream %s: no block files", stream)
	}
	slices.SortFunc(bs, func(a, b blk) int { return a.index - b.index })
	for _, b := range bs[:len(bs)-1] {
		sealed += b.size
	}
	return sealed, bs[len(bs)-1].size, len(bs) - 1, nil
}
