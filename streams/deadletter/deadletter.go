// Package deadletter reads the DLQ stream and sends dead letters back to
// the stream they came from once the cause is fixed. Stages write dead
// letters with consume.DeadLetters; this package is what `weft dlq` shows
// and redrives.
//
// Scanning reads with replay's ordered consumer and changes nothing.
// Redrive is a Watermill router over the DLQ (see redrive.go). The package
// decodes batches only to summarise them; it knows no stage kind.
package deadletter

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/replay"
	"github.com/weftobs/weft/streams/schema"
)

// Letter is one message in the DLQ stream.
type Letter struct {
	Seq     uint64    // its sequence in the DLQ stream
	Time    time.Time // when it was dead-lettered
	Stage   string    // the stage that gave up on it
	Reason  string
	Stream  string // the stream it was read from
	Subject string // the subject it was published on
	OrigSeq uint64 // its sequence in Stream
	// FirstSeq is the DLQ sequence it was first dead-lettered at (Seq
	// unless it was redriven and failed again).
	FirstSeq uint64
	Header   nats.Header
	Data     []byte
}

// Filter selects letters. Zero fields select all.
type Filter struct {
	Stage  string // exact stage name
	Reason string // substring of the reason
}

func (f Filter) subjects() []string {
	if f.Stage == "" {
		return nil
	}
	return []string{schema.DLQSubject(f.Stage)}
}

func (f Filter) match(l Letter) bool {
	return (f.Stage == "" || l.Stage == f.Stage) && strings.Contains(l.Reason, f.Reason)
}

// Scan reads the DLQ stream and returns the letters f selects, oldest
// first, up to the stream's last sequence when Scan began. It reads with
// an ephemeral ordered consumer and changes nothing.
func Scan(ctx context.Context, js jetstream.JetStream, f Filter) ([]Letter, error) {
	var out []Letter
	r := replay.Range{FilterSubjects: f.subjects()}
	_, err := replay.Read(ctx, js, schema.StreamDLQ, r, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		l := letterOf(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Headers(), m.Data())
		if f.match(l) {
			out = append(out, l)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func letterOf(seq uint64, t time.Time, subject string, h nats.Header, data []byte) Letter {
	l := Letter{
		Seq: seq, Time: t, Header: h, Data: data,
		Stage:   cmp.Or(h.Get(schema.HeaderDLQStage), strings.TrimPrefix(subject, schema.DLQPrefix)),
		Reason:  h.Get(schema.HeaderDLQReason),
		Stream:  h.Get(schema.HeaderDLQStream),
		Subject: h.Get(schema.HeaderDLQSubject),
	}
	l.OrigSeq, _ = strconv.ParseUint(h.Get(schema.HeaderDLQSeq), 10, 64)
	l.FirstSeq, _ = strconv.ParseUint(h.Get(schema.HeaderDLQFirstSeq), 10, 64)
	if l.FirstSeq == 0 {
		l.FirstSeq = seq
	}
	return l
}

// Group counts the letters of one stage with one reason.
type Group struct {
	Stage, Reason  string
	Count          int
	Oldest, Newest time.Time
}

// Groups counts letters by stage and reason, sorted by stage, then by
// count (most first), then reason.
func Groups(letters []Letter) []Group {
	idx := map[[2]string]int{}
	var out []Group
	for _, l := range letters {
		k := [2]string{l.Stage, l.Reason}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Group{Stage: l.Stage, Reason: l.Reason, Oldest: l.Time, Newest: l.Time})
		}
		g := &out[i]
		g.Count++
		if l.Time.Before(g.Oldest) {
			g.Oldest = l.Time
		}
		if l.Time.After(g.Newest) {
			g.Newest = l.Time
		}
	}
	slices.SortFunc(out, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.Stage, b.Stage), cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// Summary describes a letter's payload in a few words: what batch it is,
// from whom, how many items; or why it does not decode.
func Summary(l Letter) string {
	typ := l.Header.Get(schema.HeaderType)
	if typ == schema.TypeName(&schema.CallBatch{}) || (typ == "" && strings.HasPrefix(l.Subject, schema.CallsPrefix)) {
		b, err := schema.DecodeCallBatch(l.Data)
		if err != nil {
			return fmt.Sprintf("undecodable (%d bytes): %v", len(l.Data), err)
		}
		return fmt.Sprintf("call batch from node %s (batch %d): %d calls", b.GetOrigin().GetNode(), b.GetOrigin().GetSeq(), len(b.GetCalls()))
	}
	b, err := schema.DecodeEventBatch(l.Data)
	if err != nil {
		return fmt.Sprintf("undecodable (%d bytes): %v", len(l.Data), err)
	}
	return fmt.Sprintf("event batch from node %s (batch %d): %d events", b.GetOrigin().GetNode(), b.GetOrigin().GetSeq(), len(b.GetEvents()))
}

// RedriveMsgID is the Nats-Msg-Id a redrive of the letter first stored at
// DLQ sequence firstSeq publishes under: the same on every attempt, so a
// redrive interrupted after its publish and run again is deduplicated by
// the original stream (within that stream's duplicates window).
func RedriveMsgID(firstSeq uint64) string {
	return "weft-redrive:DLQ:" + strconv.FormatUint(firstSeq, 10)
}

// requeueMsgID is the Nats-Msg-Id of the copy a failed redrive of DLQ
// sequence seq puts back in the DLQ.
func requeueMsgID(seq uint64) string {
	return "weft-redrive-failed:DLQ:" + strconv.FormatUint(seq, 10)
}
