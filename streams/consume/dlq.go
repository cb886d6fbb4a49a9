package consume

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// DeadLetters sends messages a stage could not process to
// weft.dlq.<stage>, with the original body and headers and the reason.
type DeadLetters struct {
	js       jetstream.JetStream
	stage    string
	subject  string
	counters *stage.Counters
}

// NewDeadLetters returns the dead-letter sender of stageName.
func NewDeadLetters(js jetstream.JetStream, stageName string, counters *stage.Counters) *DeadLetters {
	if counters == nil {
		counters = &stage.Counters{}
	}
	return &DeadLetters{js: js, stage: stageName, subject: schema.DLQSubject(stageName), counters: counters}
}

// Send publishes a copy of m with reason to the DLQ stream and waits for
// the server to store it. The caller acks m after Send returns nil; if Send
// fails, m must be left for redelivery, never acked.
func (d *DeadLetters) Send(ctx context.Context, m jetstream.Msg, reason string) error {
	out := nats.NewMsg(d.subject)
	for k, vs := range m.Headers() {
		if k == jetstream.MsgIDHeader {
			continue // the original id would deduplicate against nothing useful
		}
		if strings.HasPrefix(k, "Nats-Expected-") {
			continue // the original publish's preconditions (a redrive sets Nats-Expected-Stream), not the DLQ's
		}
		for _, v := range vs {
			out.Header.Add(k, v)
		}
	}
	out.Header.Set(schema.HeaderDLQReason, reason)
	out.Header.Set(schema.HeaderDLQStage, d.stage)
	out.Header.Set(schema.HeaderDLQSubject, m.Subject())
	opts := []jetstream.PublishOpt{}
	if meta, err := m.Metadata(); err == nil {
		out.Header.Set(schema.HeaderDLQStream, meta.Stream)
		out.Header.Set(schema.HeaderDLQSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
		// Dead-lettering the same delivery twice (a crash between DLQ
		// publish and ack) stores it once.
		opts = append(opts, jetstream.WithMsgID("dlq:"+d.stage+":"+meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10)))
	}
	out.Data = m.Data()
	if _, err := d.js.PublishMsg(ctx, out, opts...); err != nil {
		return fmt.Errorf("dead-letter %s to %s: %w", m.Subject(), d.subject, err)
	}
	d.counters.DLQ.Add(1)
	return nil
}
