package otlp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// KindName is what `kind:` says for this stage.
const KindName = "otlp"

// Kind is the otlp stage kind, for the registry in cmd/weft.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        KindName,
		Description: "exports calls as spans and edge metrics, process events as logs, to an OTLP backend",
		Deploy:      []stage.DeployMode{stage.DeployDeployment, stage.DeployInProcess, stage.DeploySidecar, stage.DeployDaemonSet},
		Sink:        true,
		NewConfig:   func() any { c := DefaultConfig(); return &c },
		New:         New,
	}
}

// Stage is a running otlp stage.
type Stage struct {
	settings stage.Settings
	cfg      Config
	log      *slog.Logger
	counters *stage.Counters

	spans   *SpanMapper
	logMap  *logMapper
	traces  sdktrace.SpanExporter
	logs    sdklog.Exporter
	metrics *edgeMetrics
	selfTP  *sdktrace.TracerProvider
	// tracesGate and logsGate turn a signal off once the backend says it
	// has no service for it (see lacking.go).
	tracesGate, logsGate *signalGate
	// instance is this exporter's service.instance.id.
	instance string
	tracer   trace.Tracer

	batcher   *batcher
	consumers []*consume.Consumer
	dlq       *consume.DeadLetters
	// refusals counts batches refused for good since the last export the
	// backend took: past maxRefusalsInRow it is the backend (a proxy
	// answering 400 to everything), not the data, and the stream is held.
	refusals atomic.Int64
	durables map[string]string // stream → durable

	ctx     context.Context // cancelled when Shutdown gives up draining
	cancel  context.CancelFunc
	workers sync.WaitGroup
	bg      sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

var _ stage.Stage = (*Stage)(nil)

// New builds an otlp stage; it starts nothing.
func New(s stage.Settings) (stage.Stage, error) {
	cfg := DefaultConfig()
	switch c := s.Config.(type) {
	case nil:
	case *Config:
		cfg = *c
	case Config:
		cfg = c
	default:
		return nil, fmt.Errorf("stage %s: config is %T, want *otlp.Config", s.Name, s.Config)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", s.Name, err)
	}
	if len(s.Inputs) == 0 {
		return nil, fmt.Errorf("stage %s: an otlp stage needs an input (%s and/or %s)", s.Name, schema.StreamEvents, schema.StreamCalls)
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Counters == nil {
		s.Counters = &stage.Counters{}
	}
	res := newResources(1 << 14)
	return &Stage{
		settings: s, cfg: cfg, log: s.Logger, counters: s.Counters,
		spans: &SpanMapper{res: res}, logMap: newLogMapper(res),
		durables:   map[string]string{},
		tracesGate: newSignalGate(signalTraces, cfg, s.Logger), logsGate: newSignalGate(signalLogs, cfg, s.Logger),
		instance: instanceID(),
	}, nil
}

// Start builds the exporters and starts consuming. Connections to the
// backend are made lazily: a backend that is down at start is retried like
// one that goes down later.
func (s *Stage) Start(ctx context.Context, host stage.Host) (err error) {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.cancel()
			_ = s.Shutdown(context.Background())
		}
	}()
	if s.cfg.signalOn(signalTraces) {
		if s.traces, err = NewTraceExporter(ctx, s.cfg); err != nil {
			return fmt.Errorf("stage %s: %w", s.settings.Name, err)
		}
	}
	if s.cfg.signalOn(signalLogs) {
		if s.logs, err = NewLogExporter(ctx, s.cfg); err != nil {
			return fmt.Errorf("stage %s: %w", s.settings.Name, err)
		}
	}
	// A replay re-reads calls the live exporter already counted: its
	// metrics would add them to the backend's totals a second time (see
	// docs/otlp.md). Its spans and logs carry the same ids as the first
	// time, so a backend takes them as the same data.
	if s.cfg.signalOn(signalMetrics) && s.settings.Replay != nil {
		s.log.Info("replay: edge metrics are not exported, the live exporter counted these calls already")
	} else if s.cfg.signalOn(signalMetrics) {
		exp, err := NewMetricExporter(ctx, s.cfg)
		if err != nil {
			return fmt.Errorf("stage %s: %w", s.settings.Name, err)
		}
		gated := gatedMetricExporter{Exporter: exp, gate: newSignalGate(signalMetrics, s.cfg, s.log)}
		reader := sdkmetric.NewPeriodicReader(gated, sdkmetric.WithInterval(s.cfg.Metrics.Interval))
		if s.metrics, err = newEdgeMetrics(reader, s.cfg.Metrics, s.selfResource(), s.counters); err != nil {
			return fmt.Errorf("stage %s: metrics: %w", s.settings.Name, err)
		}
	}

	s.tracer = noop.NewTracerProvider().Tracer(ScopeName)
	if s.cfg.SelfTraces && s.cfg.signalOn(signalTraces) {
		exp, err := NewTraceExporter(ctx, s.cfg)
		if err != nil {
			return fmt.Errorf("stage %s: self traces: %w", s.settings.Name, err)
		}
		s.selfTP = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(s.selfResource()))
		s.tracer = s.selfTP.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	}

	b := s.cfg.Batch
	s.batcher = newBatcher(b.MaxItems, b.Linger, b.Queue, 4*b.MaxAckPending)
	for range b.Exporters {
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			for bt := range s.batcher.sealed {
				s.export(bt)
			}
		}()
	}
	s.bg.Add(1)
	go s.heartbeat()

	s.dlq = consume.NewDeadLetters(host.JetStream(), s.settings.Name, s.counters)
	for _, in := range s.settings.Inputs {
		cc := consume.ConfigFor(s.settings, in)
		if in.Name == schema.StreamEvents {
			// Of the events, only what becomes logs: processes, and
			// the pods they are attributed to.
			cc.FilterSubjects = consume.EventFilters(s.settings, schema.KindProcess, schema.KindPod)
		}
		cc.MaxAckPending = b.MaxAckPending
		cc.AckWait = b.AckWait
		c, err := consume.Start(ctx, host.JetStream(), cc, s.handle, s.counters, s.log)
		if err != nil {
			return err
		}
		s.consumers = append(s.consumers, c)
		if cc.Durable == "" {
			cc.Durable = consume.DurableName(cc.Stage, cc.Stream)
		}
		s.durables[in.Name] = cc.Durable
	}
	if s.metrics != nil {
		s.bg.Add(1)
		go s.pollLag(host.JetStream())
	}
	return nil
}

// instanceID is the exporter's service.instance.id: the one
// OTEL_RESOURCE_ATTRIBUTES gives (a pod's name, set by the chart), else a
// random UUID, as the semantic conventions advise for a process with no
// identity of its own. A restart gets a new one, which a backend reads as
// a new series, as it must since cumulative totals start again.
func instanceID() string {
	if res, err := resource.New(context.Background(), resource.WithFromEnv()); err == nil {
		if v, ok := res.Set().Value(semconv.ServiceInstanceIDKey); ok && v.AsString() != "" {
			return v.AsString()
		}
	}
	return uuid.NewString()
}

// selfResource is the resource of what the stage says about itself: its
// metrics and its own traces. service.instance.id tells two exporters of
// one stage apart (two replicas on one node export different calls), so a
// backend sums their series instead of taking one for the other.
func (s *Stage) selfResource() *resource.Resource {
	attrs := []attribute.KeyValue{semconv.ServiceName("weft"), semconv.ServiceInstanceID(s.instance), attribute.String("weft.stage", s.settings.Name)}
	if s.settings.Node != "" {
		attrs = append(attrs, semconv.K8SNodeName(s.settings.Node))
	}
	return resource.NewWithAttributes(semconv.SchemaURL, attrs...)
}

var (
	typeCalls  = schema.TypeName(&schema.CallBatch{})
	typeEvents = schema.TypeName(&schema.EventBatch{})
)

// handle maps one message and hands its output to the batcher; the
// message is acked once that output is accepted by the backend.
func (s *Stage) handle(_ context.Context, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return consume.Permanent(err)
	}
	key := msgKey{stream: meta.Stream, seq: meta.Sequence.Stream}
	typ := m.Headers().Get(schema.HeaderType)
	if typ == "" {
		switch meta.Stream {
		case schema.StreamCalls:
			typ = typeCalls
		case schema.StreamEvents:
			typ = typeEvents
		}
	}
	var (
		spans []sdktrace.ReadOnlySpan
		logs  []sdklog.Record
		calls []*schema.Call
	)
	switch typ {
	case typeCalls:
		b, err := schema.DecodeCallBatch(m.Data())
		if err != nil {
			return consume.Permanent(err)
		}
		if s.traces != nil && !s.tracesGate.off.Load() {
			spans = make([]sdktrace.ReadOnlySpan, 0, 2*len(b.GetCalls()))
			for _, c := range b.GetCalls() {
				spans = s.spans.AppendSpans(spans, c)
			}
		}
		if s.metrics != nil {
			calls = b.GetCalls()
		}
	case typeEvents:
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			return consume.Permanent(err)
		}
		if s.logs != nil && !s.logsGate.off.Load() {
			logs = s.logMap.appendRecords(nil, b)
		}
	default:
		return consume.Permanent(fmt.Errorf("stage %s: message type %q on %s is neither %s nor %s", s.settings.Name, typ, m.Subject(), typeCalls, typeEvents))
	}
	if len(spans) == 0 && len(logs) == 0 && len(calls) == 0 {
		return nil
	}
	if err := s.batcher.add(m, key, spans, logs, calls); err != nil {
		return err
	}
	return consume.ErrAckLater
}

// maxRefusalsInRow is how many refused exports in a row (each narrowed
// to a single message) still dead-letter.
const maxRefusalsInRow = 64

// export sends bt until the backend accepts it, then acks its messages.
// While the backend fails it retries with backoff, holding the messages
// (heartbeat keeps them from redelivery); only a Shutdown that runs out of
// time makes it give them back to the stream, with a Nak. A batch the
// backend refuses for good (see rejected) goes to the DLQ instead.
func (s *Stage) export(bt *batch) {
	_, span := s.tracer.Start(context.Background(), "weft.otlp.export", trace.WithAttributes(
		attribute.Int("weft.batch.spans", len(bt.spans)), attribute.Int("weft.batch.logs", len(bt.logs)),
		attribute.Int("weft.batch.messages", len(bt.msgs))))
	defer span.End()
	delay := s.cfg.Retry.Initial
	for attempt := 1; ; attempt++ {
		if s.ctx.Err() != nil {
			span.SetStatus(codes.Error, "shut down before the backend accepted the batch; returned to the stream")
			for _, m := range s.batcher.finish(bt, false) {
				_ = m.Nak()
			}
			return
		}
		code, err := s.exportOnce(bt)
		span.SetAttributes(attribute.Int("weft.export.attempts", attempt))
		if err == nil {
			break
		}
		if reason, ok := rejected(err, code); ok && s.refusals.Add(1) <= maxRefusalsInRow {
			s.counters.Errors.Add(1)
			if len(bt.msgs) > 1 {
				// Find the message the backend will not take.
				span.AddEvent("batch refused; exporting it message by message", trace.WithAttributes(attribute.String("error.message", reason)))
				for _, sub := range s.batcher.split(bt) {
					s.export(sub)
				}
				return
			}
			span.SetStatus(codes.Error, reason)
			s.deadLetter(bt, reason)
			return
		} else if ok && attempt == 1 {
			s.log.Warn("the backend refuses every batch: holding the stream instead of dead-lettering it", "refusals in a row", s.refusals.Load(), "err", err)
		}
		span.AddEvent("export failed", trace.WithAttributes(attribute.String("error.message", err.Error())))
		s.counters.Errors.Add(1)
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("export failed, retrying; the stream holds the data", "attempt", attempt, "spans", len(bt.spans), "logs", len(bt.logs), "err", err)
		}
		select {
		case <-time.After(delay):
		case <-s.ctx.Done():
		}
		delay = min(delay*2, s.cfg.Retry.Max)
	}
	s.refusals.Store(0)
	s.counters.EventsOut.Add(uint64(len(bt.spans) + len(bt.logs)))
	if s.metrics == nil || len(bt.calls) == 0 {
		for _, m := range s.batcher.finish(bt, true) {
			if m.Ack() == nil {
				s.counters.Acked.Add(1)
			}
		}
		return
	}
	s.ackAndRecord(bt)
}

// ackAndRecord acks bt's messages and adds the calls of each to the edge
// metrics once the server confirmed its ack: JetStream never delivers a
// message again after a confirmed ack, so no exporter, this one after a
// restart or another replica, counts its calls a second time. A message
// whose ack is not confirmed (NATS away) is not counted here: if the ack
// did not land, the message comes back and is counted then; if only the
// confirmation was lost, its calls are missing from the metrics, counted
// in weft.pipeline.unconfirmed_calls so the gap is never silent. (The
// alternative, counting before the ack, doubles every redelivery.)
func (s *Stage) ackAndRecord(bt *batch) {
	msgs := s.batcher.finish(bt, true)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Batch.AckWait)
	defer cancel()
	var from int
	for i, m := range msgs {
		if i >= len(bt.msgs) {
			// A redelivered copy of one of bt's messages: its calls
			// go with the original's ack.
			if m.Ack() == nil {
				s.counters.Acked.Add(1)
			}
			continue
		}
		to := bt.ends[i].calls
		calls := bt.calls[from:to]
		from = to
		if err := m.DoubleAck(ctx); err != nil {
			// A redelivery to this exporter must be exported and
			// counted, not taken for a copy of an acked message.
			s.batcher.forget(bt.keys[i])
			s.metrics.unconfirmed.Add(ctx, int64(len(calls)))
			continue
		}
		s.counters.Acked.Add(1)
		s.metrics.record(ctx, calls)
	}
}

// exportOnce sends what of bt the backend has not taken yet; on failure
// it also returns the HTTP status of the refused request (0 for gRPC).
func (s *Stage) exportOnce(bt *batch) (int, error) {
	if !bt.spansDone && len(bt.spans) > 0 && !s.tracesGate.off.Load() {
		ctx, st := withHTTPStatus(s.ctx)
		if err := s.traces.ExportSpans(ctx, bt.spans); err != nil {
			if !unsupported(err, int(st.code.Load())) {
				return int(st.code.Load()), fmt.Errorf("export %d spans: %w", len(bt.spans), err)
			}
			s.tracesGate.lacks(err)
		}
	}
	bt.spansDone = true
	if !bt.logsDone && len(bt.logs) > 0 && !s.logsGate.off.Load() {
		ctx, st := withHTTPStatus(s.ctx)
		if err := s.logs.Export(ctx, bt.logs); err != nil {
			if !unsupported(err, int(st.code.Load())) {
				return int(st.code.Load()), fmt.Errorf("export %d log records: %w", len(bt.logs), err)
			}
			s.logsGate.lacks(err)
		}
	}
	bt.logsDone = true
	return 0, nil
}

// deadLetter sends bt's messages to the DLQ with reason, then acks them
// (their redelivered copies too); one the DLQ did not take goes back to
// its stream (Nak, after a delay), never lost. They are sent while still
// held, so the heartbeat keeps them from redelivery meanwhile. What of a
// message the backend did take (its spans, before its logs were refused)
// is sent again if the DLQ's copy is replayed.
func (s *Stage) deadLetter(bt *batch, reason string) {
	s.log.Error("backend refused a message for good; it goes to the DLQ", "spans", len(bt.spans), "logs", len(bt.logs), "messages", len(bt.msgs), "reason", reason)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Batch.AckWait)
	defer cancel()
	failed := map[msgKey]bool{}
	for i, m := range bt.msgs {
		if err := s.dlq.Send(ctx, m, reason); err != nil {
			s.log.Warn("dead-letter failed; message returned to its stream", "subject", m.Subject(), "err", err)
			failed[bt.keys[i]] = true
		}
	}
	for _, m := range s.batcher.finish(bt, len(failed) == 0) {
		// Acking any delivery of a message acks it: a copy of one the
		// DLQ did not take is given back too.
		if md, err := m.Metadata(); err != nil || failed[msgKey{md.Stream, md.Sequence.Stream}] {
			_ = m.NakWithDelay(s.cfg.Retry.Max)
			continue
		}
		if m.Ack() == nil {
			s.counters.Acked.Add(1)
		}
	}
}

// heartbeat tells JetStream the stage is still working on what it holds
// (InProgress every AckWait/3), so a slow or failing backend never makes
// the server redeliver what the stage still has.
func (s *Stage) heartbeat() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.Batch.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			for _, m := range s.batcher.held() {
				_ = m.InProgress()
			}
		}
	}
}

// pollLag reads each input consumer's pending count for the lag gauge.
func (s *Stage) pollLag(js jetstream.JetStream) {
	defer s.bg.Done()
	t := time.NewTicker(min(s.cfg.Metrics.Interval, 5*time.Second))
	defer t.Stop()
	for {
		for stream, durable := range s.durables {
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			if c, err := js.Consumer(ctx, stream, durable); err == nil {
				if info, err := c.Info(ctx); err == nil {
					s.metrics.setLag(stream, info.NumPending)
				}
			}
			cancel()
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Shutdown stops consuming, exports and acks what the stage holds, and
// flushes the metrics, until ctx ends; then it gives what is left back to
// the stream (Nak) for redelivery. It is idempotent and safe without Start.
// drainTimeout bounds how long Shutdown waits for the backend to take
// what the stage holds.
const drainTimeout = 5 * time.Second

func (s *Stage) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		if s.cancel == nil {
			return
		}
		// A backend that is down must not hold the process for the whole
		// shutdown deadline: after a short drain, exports are abandoned
		// and their messages stay unacked in the stream, to be sent by
		// the next run. Nothing is lost, so that is not an error.
		drainCtx, cancelDrain := context.WithTimeout(ctx, drainTimeout)
		defer cancelDrain()
		stopped := make(chan struct{})
		defer close(stopped)
		go func() {
			select {
			case <-drainCtx.Done():
				s.cancel() // exporters stop retrying and nak
			case <-stopped:
			}
		}()
		var errs []error
		for _, c := range s.consumers {
			if err := c.Stop(drainCtx); err != nil {
				if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
					s.log.Warn("backend did not take everything before shutdown; the rest stays in the stream", "err", err)
					continue
				}
				errs = append(errs, err)
			}
		}
		if s.batcher != nil {
			s.batcher.close()
			s.workers.Wait()
		}
		s.cancel()
		s.bg.Wait()
		fctx := ctx
		if ctx.Err() != nil {
			// Closing connections must not wait for a deadline already passed.
			var cancel context.CancelFunc
			fctx, cancel = context.WithTimeout(context.Background(), time.Second)
			defer cancel()
		}
		if s.metrics != nil {
			// The last metrics push is best effort: the counters are
			// cumulative and the next run reports them again.
			if err := s.metrics.provider.Shutdown(fctx); err != nil {
				s.log.Warn("last metrics push failed", "err", err)
			}
		}
		if s.traces != nil {
			errs = append(errs, s.traces.Shutdown(fctx))
		}
		if s.selfTP != nil {
			errs = append(errs, s.selfTP.Shutdown(fctx))
		}
		if s.logs != nil {
			errs = append(errs, s.logs.Shutdown(fctx))
		}
		if err := errors.Join(errs...); err != nil {
			s.shutdownErr = fmt.Errorf("stage %s: shutdown: %w", s.settings.Name, err)
		}
	})
	return s.shutdownErr
}
