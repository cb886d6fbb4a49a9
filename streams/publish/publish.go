// Package publish is the batched, deduplicated, bounded publisher every
// stage uses to write to a stream.
//
// Items (events, calls) are appended to one open batch per subject; a batch
// is sealed when it holds MaxBatchItems items or MaxBatchBytes bytes, or
// when it has been open for Linger. Sealed batches are published
// asynchronously with a Nats-Msg-Id of (node, boot id, epoch, sequence), so
// a publish retried after a timeout or a server restart is deduplicated by
// the server. Sealed-but-unacknowledged batches are bounded by
// MaxBufferedBytes: past it, Publish blocks (OverflowBlock) or the batch is
// dropped and counted (OverflowDrop). Memory is therefore bounded by
// MaxBufferedBytes plus one open batch per subject.
//
// The package owns publishing only; it does not create streams.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Overflow says what happens when MaxBufferedBytes is reached.
type Overflow string

const (
	// OverflowBlock makes Publish wait for room (backpressure).
	OverflowBlock Overflow = "block"
	// OverflowDrop drops the sealed batch and counts its items in
	// Counters.Dropped. For sources that must never stall (a ring-buffer
	// reader would lose events in the kernel instead, uncounted by weft).
	OverflowDrop Overflow = "drop"
)

// Config configures a Publisher. The zero value of every field is replaced
// by its default.
type Config struct {
	// Stage is the publishing stage's name (recorded in each batch).
	Stage string
	// Node is the node name; default the host name.
	Node string
	// BootID is the kernel boot id; default read from
	// /proc/sys/kernel/random/boot_id.
	BootID string
	// Epoch tells apart publisher instances within one boot; default the
	// current time in Unix nanoseconds.
	Epoch uint64
	// Type is the batch message the items belong in; it is written to the
	// Weft-Type header. Default weft.schema.v1.EventBatch.
	Type proto.Message

	// PerBatch, when set, is called for every new batch; what it returns
	// is given each item of that batch, in order, before the item is
	// encoded, and the item encoded is what it returns: so an item may
	// leave out what an earlier item of the same message carries
	// (schema.NewCallCompactor), and every message still decodes alone.
	// It runs under the publisher's lock.
	PerBatch func() func(proto.Message) proto.Message

	MaxBatchItems int           // default 1024
	MaxBatchBytes int           // default 256 KiB
	Linger        time.Duration // default 50ms

	// MaxBufferedBytes bounds the bytes of sealed batches not yet
	// acknowledged by the server. Default 64 MiB.
	MaxBufferedBytes int64
	// MaxInFlight bounds the batches published and awaiting their ack.
	// Default 64.
	MaxInFlight int
	// AckTimeout is how long to wait for a publish ack before publishing
	// the same message again (same Msg-Id). Default 5s.
	AckTimeout time.Duration
	// Overflow is what to do when MaxBufferedBytes is reached. Default
	// OverflowBlock.
	Overflow Overflow
	// Fence, when set, is asked right before each batch is handed to the
	// connection. Once it says false the publisher is fenced for good:
	// nothing more is sent, what is queued is discarded, and Publish and
	// Flush return ErrFenced — so a caller never acks the input of a batch
	// that was not sent. It is how a stage that lost its claim to a
	// partition (a lease run out while the process was paused) is kept
	// from publishing next to the replica that took the partition over.
	Fence func() bool
}

func (c *Config) setDefaults() error {
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		c.Node = h
	}
	if c.BootID == "" {
		c.BootID = BootID()
	}
	if c.Epoch == 0 {
		c.Epoch = uint64(time.Now().UnixNano())
	}
	if c.Type == nil {
		c.Type = &schema.EventBatch{}
	}
	if c.MaxBatchItems <= 0 {
		c.MaxBatchItems = 1024
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 256 << 10
	}
	if c.Linger <= 0 {
		c.Linger = 50 * time.Millisecond
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.Overflow == "" {
		c.Overflow = OverflowBlock
	}
	return c.Validate()
}

// DefaultMaxBufferedBytes is the default bound on sealed, unacknowledged
// bytes.
const DefaultMaxBufferedBytes = 64 << 20

// Validate reports every problem in c.
func (c *Config) Validate() error {
	var errs []error
	if c.Overflow != OverflowBlock && c.Overflow != OverflowDrop && c.Overflow != "" {
		errs = append(errs, fmt.Errorf("overflow %q: want %q or %q", c.Overflow, OverflowBlock, OverflowDrop))
	}
	if c.MaxBufferedBytes > 0 && int64(c.MaxBatchBytes)*2 > c.MaxBufferedBytes {
		errs = append(errs, fmt.Errorf("maxBufferedBytes %d must hold at least two batches of maxBatchBytes %d", c.MaxBufferedBytes, c.MaxBatchBytes))
	}
	return errors.Join(errs...)
}

// BootID returns this machine's kernel boot id, or "noboot" where there is
// none (not Linux).
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "noboot"
	}
	return strings.TrimSpace(string(b))
}

// Stats are the publisher's own figures.
type Stats struct {
	Published      uint64 // batches acknowledged by the server
	ItemsPublished uint64 // items in them
	Retries        uint64 // publishes repeated after an error or timeout
	DroppedBatches uint64 // batches dropped on overflow
	DroppedItems   uint64
	BufferedBytes  int64 // sealed, not yet acknowledged
	// PeakBufferedBytes is the most BufferedBytes has been; it never
	// exceeds Config.MaxBufferedBytes.
	PeakBufferedBytes int64
}

// Publisher batches items into stream messages. Publish and Flush are safe
// for concurrent use. Close flushes and stops it.
type Publisher struct {
	js       jetstream.JetStream
	cfg      Config
	counters *stage.Counters
	log      *slog.Logger
	header   []byte // encoded schema_version + origin without seq
	budget   *semaphore.Weighted

	mu      sync.Mutex
	open    map[string]*openBatch
	seq     uint64
	scratch []byte
	closed  bool
	fenced  atomic.Bool

	qmu     sync.Mutex
	queue   []*sealed
	kick    chan struct{}
	acked   chan struct{} // closed and replaced whenever a batch is acked
	pending int           // sealed batches not yet acked

	statsMu sync.Mutex
	stats   Stats

	stop      chan struct{}
	abort     chan struct{} // closed when Close gives up waiting for acks
	abortOnce sync.Once
	done      chan struct{}
	leftover  []*sealed // in flight when pump aborted; read after done
}

type openBatch struct {
	subject string
	buf     []byte
	items   int
	opened  time.Time
	perItem func(proto.Message) proto.Message // from Config.PerBatch
}

type sealed struct {
	msg   *nats.Msg
	items int
	size  int64
	fut   jetstream.PubAckFuture
	sent  time.Time
}

// New returns a running publisher writing through nc. It makes its own
// JetStream context so its ack timeout and in-flight bound are its own.
// counters may be nil.
func New(nc *nats.Conn, cfg Config, counters *stage.Counters, log *slog.Logger) (*Publisher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("publisher config: %w", err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight*2))
	if err != nil {
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	if counters == nil {
		counters = &stage.Counters{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		js: js, cfg: cfg, counters: counters, log: log,
		budget: semaphore.NewWeighted(cfg.MaxBufferedBytes),
		open:   map[string]*openBatch{},
		kick:   make(chan struct{}, 1),
		acked:  make(chan struct{}),
		stop:   make(chan struct{}),
		abort:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	p.header = p.encodeHeader()
	go p.pump()
	go p.lingerLoop()
	return p, nil
}

// encodeHeader encodes fields 1 (schema_version) and 2 (origin, without
// seq); each sealed batch appends its own origin.seq as a second origin
// occurrence, which protobuf merges.
func (p *Publisher) encodeHeader() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, schema.Version)
	origin, _ := proto.Marshal(&schema.Origin{Node: p.cfg.Node, BootId: p.cfg.BootID, Epoch: p.cfg.Epoch, Stage: p.cfg.Stage})
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, origin)
	return b
}

// Publish appends item to the open batch for subject, at the batch's items
// field (schema.ItemField: an ended pod at CallBatch.pods_ended). The item is encoded
// before Publish returns; the caller may reuse it. Publish blocks only when
// a sealed batch must wait for buffer room (OverflowBlock) and returns
// ctx's error if ctx ends first; that batch is then dropped and counted.
func (p *Publisher) Publish(ctx context.Context, subject string, item proto.Message) error {
	if p.fenced.Load() {
		return ErrFenced
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	b := p.open[subject]
	fresh := b == nil
	if fresh {
		b = &openBatch{subject: subject, opened: time.Now(), buf: make([]byte, 0, min(p.cfg.MaxBatchBytes+1024, 64<<10))}
		if p.cfg.PerBatch != nil {
			b.perItem = p.cfg.PerBatch()
		}
	}
	enc := item
	if b.perItem != nil {
		enc = b.perItem(item)
	}
	var err error
	p.scratch, err = proto.MarshalOptions{}.MarshalAppend(p.scratch[:0], enc)
	if err != nil {
		if b.perItem != nil {
			// It may have counted on the item being in the batch:
			// later items start afresh (carrying whole what they need).
			b.perItem = p.cfg.PerBatch()
		}
		p.mu.Unlock()
		return fmt.Errorf("encode item for %s: %w", subject, err)
	}
	if fresh {
		p.open[subject] = b
	}
	b.buf = protowire.AppendTag(b.buf, schema.ItemField(item), protowire.BytesType)
	b.buf = protowire.AppendBytes(b.buf, p.scratch)
	b.items++
	var s *sealed
	if b.items >= p.cfg.MaxBatchItems || len(b.buf) >= p.cfg.MaxBatchBytes {
		s = p.sealLocked(b)
	}
	p.mu.Unlock()
	if s != nil {
		return p.enqueue(ctx, s)
	}
	return nil
}

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("publisher closed")

// ErrFenced is returned by Publish and Flush once Config.Fence said no.
var ErrFenced = errors.New("publisher fenced: the stage lost its claim to publish")

// fence reports whether the publisher is fenced, asking Config.Fence.
func (p *Publisher) fence() bool {
	if p.fenced.Load() {
		return true
	}
	if p.cfg.Fence != nil && !p.cfg.Fence() {
		p.fenced.Store(true)
		return true
	}
	return false
}

// discard settles s unsent (fenced): its items count as dropped.
func (p *Publisher) discard(s *sealed) {
	p.drop(s)
	p.budget.Release(s.size)
	p.statsMu.Lock()
	p.stats.BufferedBytes -= s.size
	p.statsMu.Unlock()
	p.qmu.Lock()
	p.pending--
	close(p.acked)
	p.acked = make(chan struct{})
	p.qmu.Unlock()
}

func (p *Publisher) sealLocked(b *openBatch) *sealed {
	delete(p.open, b.subject)
	p.seq++
	seq := p.seq
	data := make([]byte, 0, len(p.header)+len(b.buf)+16)
	data = append(data, p.header...)
	var originSeq []byte
	originSeq = protowire.AppendTag(originSeq, 4, protowire.VarintType)
	originSeq = protowire.AppendVarint(originSeq, seq)
	data = protowire.AppendTag(data, 2, protowire.BytesType)
	data = protowire.AppendBytes(data, originSeq)
	data = append(data, b.buf...)

	msg := nats.NewMsg(b.subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(p.cfg.Node, p.cfg.BootID, p.cfg.Epoch, seq))
	msg.Header.Set(schema.HeaderType, schema.TypeName(p.cfg.Type))
	msg.Header.Set(schema.HeaderItems, strconv.Itoa(b.items))
	return &sealed{msg: msg, items: b.items, size: int64(len(data))}
}

// MsgID is the Nats-Msg-Id of a batch.
func MsgID(node, bootID string, epoch, seq uint64) string {
	return schema.Token(node) + ":" + bootID + ":" + strconv.FormatUint(epoch, 10) + ":" + strconv.FormatUint(seq, 10)
}

func (p *Publisher) enqueue(ctx context.Context, s *sealed) error {
	switch p.cfg.Overflow {
	case OverflowDrop:
		if !p.budget.TryAcquire(s.size) {
			p.drop(s)
			return nil
		}
	default:
		if err := p.budget.Acquire(ctx, s.size); err != nil {
			p.drop(s)
			return fmt.Errorf("publish to %s: waiting for buffer room: %w", s.msg.Subject, err)
		}
	}
	p.qmu.Lock()
	p.queue = append(p.queue, s)
	p.pending++
	p.qmu.Unlock()
	p.statsMu.Lock()
	p.stats.BufferedBytes += s.size
	p.stats.PeakBufferedBytes = max(p.stats.PeakBufferedBytes, p.stats.BufferedBytes)
	p.statsMu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

func (p *Publisher) drop(s *sealed) {
	p.counters.Dropped.Add(uint64(s.items))
	p.statsMu.Lock()
	p.stats.DroppedBatches++
	p.stats.DroppedItems += uint64(s.items)
	p.statsMu.Unlock()
}

// lingerLoop seals batches that have been open for Linger.
func (p *Publisher) lingerLoop() {
	t := time.NewTicker(max(p.cfg.Linger/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.sealOlderThan(now.Add(-p.cfg.Linger))
		}
	}
}

func (p *Publisher) sealOlderThan(cutoff time.Time) {
	p.mu.Lock()
	var ready []*sealed
	for _, b := range p.open {
		if !b.opened.After(cutoff) {
			ready = append(ready, p.sealLocked(b))
		}
	}
	p.mu.Unlock()
	if len(ready) == 0 {
		return // the common tick: nothing has lingered long enough
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for _, s := range ready {
		_ = p.enqueue(ctx, s) // a failure is counted as dropped by enqueue
	}
}

// pump publishes queued batches and settles their acks, oldest first. It
// is the only goroutine that publishes.
func (p *Publisher) pump() {
	var inflight []*sealed
	defer func() {
		p.leftover = inflight
		close(p.done)
	}()
	backoff := time.Duration(0)
	for {
		// Publish what fits in the in-flight window.
		for len(inflight) < p.cfg.MaxInFlight {
			p.qmu.Lock()
			if len(p.queue) == 0 {
				p.qmu.Unlock()
				break
			}
			s := p.queue[0]
			p.qmu.Unlock()
			if p.fence() {
				p.qmu.Lock()
				p.queue = p.queue[1:]
				p.qmu.Unlock()
				p.discard(s)
				continue
			}
			if err := p.send(s); err != nil {
				backoff = nextBackoff(backoff)
				p.log.Debug("publish failed, will retry", "subject", s.msg.Subject, "err", err, "backoff", backoff)
				break
			}
			backoff = 0
			p.qmu.Lock()
			p.queue = p.queue[1:]
			p.qmu.Unlock()
			inflight = append(inflight, s)
		}

		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		if len(inflight) == 0 {
			select {
			case <-p.kick:
			case <-retry:
			case <-p.stop:
				if p.drained() {
					return
				}
				// Stop asked while batches remain: keep going until
				// Close's context gives up (it then closes p.abort).
				select {
				case <-p.kick:
				case <-retry:
				case <-p.abort:
					return
				}
			}
			continue
		}

		head := inflight[0]
		select {
		case <-head.fut.Ok():
			inflight = inflight[1:]
			p.settle(head)
		case err := <-head.fut.Err():
			p.statsMu.Lock()
			p.stats.Retries++
			p.statsMu.Unlock()
			p.log.Debug("publish not acknowledged, publishing again", "subject", head.msg.Subject, "msg_id", head.msg.Header.Get(jetstream.MsgIDHeader), "err", err)
			if p.fence() {
				inflight = inflight[1:]
				p.discard(head)
				continue
			}
			if serr := p.send(head); serr != nil {
				// Could not even hand it to the connection: back to the
				// queue's front, retried after a backoff.
				inflight = inflight[1:]
				p.qmu.Lock()
				p.queue = append([]*sealed{head}, p.queue...)
				p.qmu.Unlock()
				backoff = nextBackoff(backoff)
			}
		case <-p.kick:
		case <-retry:
		case <-p.abort:
			return
		}
	}
}

func (p *Publisher) send(s *sealed) error {
	fut, err := p.js.PublishMsgAsync(s.msg, jetstream.WithStallWait(p.cfg.AckTimeout))
	if err != nil {
		return err
	}
	s.fut = fut
	s.sent = time.Now()
	return nil
}

func (p *Publisher) settle(s *sealed) {
	p.budget.Release(s.size)
	p.counters.EventsOut.Add(uint64(s.items))
	p.statsMu.Lock()
	p.stats.Published++
	p.stats.ItemsPublished += uint64(s.items)
	p.stats.BufferedBytes -= s.size
	p.statsMu.Unlock()
	p.qmu.Lock()
	p.pending--
	close(p.acked)
	p.acked = make(chan struct{})
	p.qmu.Unlock()
}

func (p *Publisher) drained() bool {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return p.pending == 0
}

func nextBackoff(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 10 * time.Millisecond
	case d >= time.Second:
		return 2 * time.Second
	default:
		return d * 2
	}
}

// Flush seals every open batch and waits until every batch sealed so far
// is acknowledged, or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	var ready []*sealed
	for _, b := range p.open {
		ready = append(ready, p.sealLocked(b))
	}
	p.mu.Unlock()
	for _, s := range ready {
		if err := p.enqueue(ctx, s); err != nil {
			return err
		}
	}
	for {
		p.qmu.Lock()
		n, ch := p.pending, p.acked
		p.qmu.Unlock()
		if p.fenced.Load() {
			return ErrFenced
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flush: %d batches not acknowledged: %w", n, ctx.Err())
		}
	}
}

// Close flushes and stops the publisher. Batches still unacknowledged when
// ctx ends are dropped and counted. Close is idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.Flush(ctx)
	close(p.stop)
	if err != nil {
		p.abortOnce.Do(func() { close(p.abort) })
		<-p.done
		p.qmu.Lock()
		lost := append(p.queue, p.leftover...)
		p.queue = nil
		p.qmu.Unlock()
		for _, s := range lost {
			p.drop(s)
		}
		return fmt.Errorf("close publisher: %w", err)
	}
	<-p.done
	return nil
}

// Stats returns the publisher's figures so far.
func (p *Publisher) Stats() Stats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	return p.stats
}
