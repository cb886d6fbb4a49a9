package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/replay"
	"github.com/weftobs/weft/streams/runner"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

type replayOptions struct {
	nats       natsFlags
	stream     string
	since      time.Duration
	startTime  string
	startSeq   uint64
	until      string
	to         string
	out        string
	topology   string
	dataDir    string
	node       string
	noProgress bool
}

func newReplayCmd() *cobra.Command {
	var o replayOptions
	cmd := &cobra.Command{
		Use:   "replay --stream NAME [--since DUR | --start-time RFC3339 | --start-seq N] [--until SEQ|RFC3339|DUR] (--to STAGE | --out FILE.ndjson)",
		Short: "Replay a stored stream range into a stage, or dump it as NDJSON",
		Long: `Replay reads a range of a stored stream. With --to it runs that stage of the
topology (-f, default the built-in local one) over the range under a
temporary consumer, so the stage's own position is untouched: rebuild a
graph into an empty store, re-export to a new OTLP backend. With --out it
writes every message's decoded batch as one JSON line ("-" for stdout).

--until takes a sequence number, an RFC3339 time, or a duration ago.`,
		Example: `  weft replay --stream CALLS --start-seq 1 --to graph
  weft replay --stream CALLS --since 1h --to otlp -f hybrid.yaml
  weft replay --stream EVENTS --since 10m --out events.ndjson`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.rangeOf(time.Now())
			if err != nil {
				return usageError{err}
			}
			switch {
			case o.stream == "":
				return usageError{errors.New("--stream is required")}
			case (o.to == "") == (o.out == ""):
				return usageError{errors.New("give exactly one of --to STAGE or --out FILE")}
			case o.out != "":
				return replayOut(cmd.Context(), cmd.ErrOrStderr(), o, r)
			default:
				return replayTo(cmd.Context(), cmd.ErrOrStderr(), o, r)
			}
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.stream, "stream", "", "stream to replay (EVENTS, CALLS, DLQ)")
	fs.DurationVar(&o.since, "since", 0, "start this long ago")
	fs.StringVar(&o.startTime, "start-time", "", "start at this time (RFC3339)")
	fs.Uint64Var(&o.startSeq, "start-seq", 0, "start at this stream sequence")
	fs.StringVar(&o.until, "until", "", "end at this sequence, time (RFC3339) or duration ago (inclusive)")
	fs.StringVar(&o.to, "to", "", "stage of the topology to replay into")
	fs.StringVar(&o.out, "out", "", "write NDJSON here instead (- for stdout)")
	fs.StringVarP(&o.topology, "file", "f", "", "topology that defines --to's stage (default: the built-in local topology)")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "data dir for the stage's state [$WEFT_DATA_DIR]")
	fs.StringVar(&o.node, "node", nodeName(), "node name [$WEFT_NODE_NAME]")
	fs.BoolVar(&o.noProgress, "no-progress", false, "no progress bar")
	o.nats.registerOperator(fs)
	return cmd
}

func (o replayOptions) rangeOf(now time.Time) (replay.Range, error) {
	var r replay.Range
	starts := 0
	if o.since < 0 {
		return r, fmt.Errorf("--since %s: want how long ago, not a negative duration", o.since)
	}
	if o.since > 0 {
		starts++
		r.StartTime = now.Add(-o.since)
	}
	if o.startTime != "" {
		starts++
		t, err := time.Parse(time.RFC3339, o.startTime)
		if err != nil {
			return r, fmt.Errorf("--start-time %q: want RFC3339, e.g. 2026-11-21T09:00:00Z", o.startTime)
		}
		r.StartTime = t
	}
	if o.startSeq > 0 {
		starts++
		r.StartSeq = o.startSeq
	}
	if starts > 1 {
		return r, errors.New("give one of --since, --start-time, --start-seq")
	}
	if o.until != "" {
		if n, err := strconv.ParseUint(o.until, 10, 64); err == nil {
			r.UntilSeq = n
		} else if t, err := time.Parse(time.RFC3339, o.until); err == nil {
			r.UntilTime = t
		} else if d, err := time.ParseDuration(o.until); err == nil {
			if d < 0 {
				return r, fmt.Errorf("--until %q: want how long ago, not a negative duration", o.until)
			}
			r.UntilTime = now.Add(-d)
		} else {
			return r, fmt.Errorf("--until %q: want a sequence, an RFC3339 time or a duration ago", o.until)
		}
	}
	return r, r.Validate()
}

func newBar(w io.Writer, total uint64, what string, off bool) *progressbar.ProgressBar {
	if off {
		return progressbar.DefaultSilent(int64(total))
	}
	return progressbar.NewOptions64(int64(total),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("msg"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}

// replayOut dumps a range as NDJSON: one line per event or call, with the
// stream sequence of its message, its index in the batch, the subject and
// the message's time; an undecodable message is one line with its error,
// never skipped. The file is written under a temporary name and renamed
// when complete, so a missing stream, an empty range or an interrupted
// dump leaves no file behind.
func replayOut(ctx context.Context, errw io.Writer, o replayOptions, r replay.Range) error {
	o.nats.Name = "weft replay"
	nc, js, err := natsconn.Connect(ctx, o.nats.Options, slog.Default())
	if err != nil {
		return err
	}
	defer nc.Close()
	b, err := replay.Resolve(ctx, js, o.stream, r)
	if err != nil {
		return streamError(o.stream, err)
	}
	if err := b.Empty(o.stream, r); err != nil {
		return err
	}
	w, commit, abort, err := createOut(o.out)
	if err != nil {
		return err
	}
	defer abort()
	bw := bufio.NewWriterSize(w, 1<<20)
	bar := newBar(errw, b.Total(), "replay "+o.stream, o.noProgress || o.out == "-" || !isTerminal(errw))
	var msgs, items, bad int
	enc := lineEncoder{w: bw}
	_, err = replay.Read(ctx, js, o.stream, r, func(m jetstream.Msg) error {
		msgs++
		n, derr := enc.message(m)
		items += n
		if derr != nil {
			bad++
		}
		return enc.err
	}, func(seq uint64, b replay.Bounds) { _ = bar.Set64(int64(seq - b.First + 1)) })
	_ = bar.Finish()
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	if msgs == 0 {
		return fmt.Errorf("%w: stream %s has no messages in the range", replay.ErrEmptyRange, o.stream)
	}
	if err := commit(); err != nil {
		return err
	}
	fmt.Fprintf(errw, "replayed %d messages of %s (sequences %d…%d): %d lines; %d undecodable\n", msgs, o.stream, b.First, b.Last, items+bad, bad)
	return nil
}

// createOut opens where --out writes: stdout for "-", else a temporary
// file beside path that commit renames to path and abort removes (abort
// after commit does nothing).
func createOut(path string) (w io.Writer, commit func() error, abort func(), err error) {
	if path == "-" {
		return os.Stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create %s: %w", path, err)
	}
	done := false
	commit = func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(f.Name(), path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		done = true
		return nil
	}
	abort = func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}
	return f, commit, abort, nil
}

// lineEncoder writes replay's NDJSON lines.
type lineEncoder struct {
	w   *bufio.Writer
	err error // the first write error
}

var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

// message writes one line per item of m's batch, or one line with the
// decode error, and returns how many items it wrote and the decode error.
func (e *lineEncoder) message(m jetstream.Msg) (int, error) {
	meta, err := m.Metadata()
	if err != nil {
		return 0, err
	}
	h := m.Headers()
	base := map[string]any{
		"seq":     meta.Sequence.Stream,
		"subject": m.Subject(),
		"time":    meta.Timestamp.UTC().Format(time.RFC3339Nano),
	}
	if reason := h.Get(schema.HeaderDLQReason); reason != "" {
		base["dlq_reason"] = reason
		base["dlq_stage"] = h.Get(schema.HeaderDLQStage)
		base["dlq_subject"] = h.Get(schema.HeaderDLQSubject)
	}
	origSubject := cmp.Or(h.Get(schema.HeaderDLQSubject), m.Subject())
	key, items, derr := batchItems(h.Get(schema.HeaderType), origSubject, m.Data())
	if derr != nil {
		base["error"] = derr.Error()
		e.write(base)
		return 0, derr
	}
	for i, it := range items {
		raw, err := protoJSON.Marshal(it)
		if err != nil {
			return i, fmt.Errorf("encode sequence %d item %d: %w", meta.Sequence.Stream, i, err)
		}
		base["index"] = i
		base[key] = json.RawMessage(raw)
		e.write(base)
	}
	return len(items), nil
}

func (e *lineEncoder) write(v any) {
	if e.err != nil {
		return
	}
	out, err := json.Marshal(v)
	if err != nil {
		e.err = err
		return
	}
	out = append(out, '\n')
	_, e.err = e.w.Write(out)
}

// batchItems decodes a batch body by its type header (or, lacking one, by
// the subject it was published on) into its events or calls; key names
// them in a line.
func batchItems(typ, subject string, data []byte) (key string, items []proto.Message, err error) {
	if typ == schema.TypeName(&schema.CallBatch{}) || (typ == "" && strings.HasPrefix(subject, schema.CallsPrefix)) {
		b, err := schema.DecodeCallBatch(data)
		if err != nil {
			return "", nil, err
		}
		for _, c := range b.GetCalls() {
			items = append(items, c)
		}
		return "call", items, nil
	}
	b, err := schema.DecodeEventBatch(data)
	if err != nil {
		return "", nil, err
	}
	for _, ev := range b.GetEvents() {
		items = append(items, ev)
	}
	return "event", items, nil
}

// isTerminal reports whether w is a terminal, where a progress bar can
// redraw itself; anywhere else it would be noise in a log.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// replayTo runs one stage over the range under a temporary durable and
// waits until it has acked the whole range.
func replayTo(ctx context.Context, errw io.Writer, o replayOptions, r replay.Range) error {
	reg := registry()
	topo, err := loadTopology(o.topology, reg)
	if err != nil {
		return err
	}
	def := topo.Stage(o.to)
	if def == nil {
		return usageError{fmt.Errorf("topology %s has no stage %q", topo.File, o.to)}
	}
	reads := false
	for _, in := range def.Inputs {
		reads = reads || in == o.stream
	}
	if !reads {
		return usageError{fmt.Errorf("stage %s does not read stream %s (its inputs: %v)", o.to, o.stream, def.Inputs)}
	}
	o.nats.Name = "weft replay"
	nc, js, err := natsconn.Connect(ctx, o.nats.Options, slog.Default())
	if err != nil {
		return err
	}
	defer nc.Close()
	b, err := replay.Resolve(ctx, js, o.stream, r)
	if err != nil {
		return streamError(o.stream, err)
	}
	if err := b.Empty(o.stream, r); err != nil {
		return err
	}
	// The stage keeps its state in the data dir, as under weft up or run.
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(o.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	durable := fmt.Sprintf("replay-%s-%d", o.to, time.Now().Unix())
	rp := &stage.Replay{Durable: durable, StartSeq: b.First, UntilSeq: b.Last, UntilTime: r.UntilTime}
	run, err := runner.New(runner.Options{
		Topology: topo, Registry: reg, Stages: []string{o.to}, JS: js,
		Node: o.node, DataDir: o.dataDir, Logger: slog.Default(), Replay: rp,
	})
	if err != nil {
		return err
	}
	if err := run.Start(ctx); err != nil {
		return err
	}
	bar := newBar(errw, b.Total(), "replay "+o.stream+" → "+o.to, o.noProgress || !isTerminal(errw))
	consumerName := consume.Config{Stage: o.to, Stream: o.stream, Durable: durable}.ConsumerConfig().Durable
	waitErr := waitReplayed(ctx, js, o.stream, consumerName, b, bar, run)
	_ = bar.Finish()
	sctx, cancel := context.WithTimeout(context.Background(), stage.DefaultShutdownTimeout)
	defer cancel()
	err = errors.Join(waitErr, run.Shutdown(sctx))
	if derr := js.DeleteConsumer(sctx, o.stream, consumerName); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
		slog.Warn("delete replay consumer", "consumer", consumerName, "err", derr)
	}
	if err != nil {
		return err
	}
	c := run.Counters()[0]
	fmt.Fprintf(errw, "replayed %s sequences %d…%d into %s: %d messages, %d items, %d to DLQ\n", o.stream, b.First, b.Last, o.to, c.MessagesIn, c.EventsIn, c.DLQ)
	return nil
}

func waitReplayed(ctx context.Context, js jetstream.JetStream, stream, consumer string, b replay.Bounds, bar *progressbar.ProgressBar, run *runner.Runner) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-run.Fatal():
			return err
		case <-t.C:
		}
		cons, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			continue // not created yet
		}
		info, err := cons.Info(ctx)
		if err != nil {
			continue
		}
		done := info.AckFloor.Stream
		if done >= b.First {
			_ = bar.Set64(int64(min(done, b.Last) - b.First + 1))
		}
		if done >= b.Last || (info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= b.Last) {
			return nil
		}
	}
}
