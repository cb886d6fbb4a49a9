package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/deadletter"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// setup publishes batches of 5 events from node n1 to EVENTS (with the
// publisher's headers) plus one undecodable message, and dead-letters the
// messages as stages do, with consume.DeadLetters: the EVENTS sequences
// in byStage[stage] with reason reasons[stage][i].
func setup(t *testing.T, batches int, letters []struct {
	stage, reason string
	seq           uint64
}) *natstest.Server {
	t.Helper()
	s := natstest.Start(t)
	ctx := context.Background()
	if _, err := s.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"weft.events.>"}, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s.CreateStream(t, "DLQ", "weft.dlq.>")
	s.PublishTCPEvents(t, "n1", 5*batches, 5)
	for _, l := range letters {
		cons, err := s.JS.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: l.seq})
		if err != nil {
			t.Fatal(err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := consume.NewDeadLetters(s.JS, l.stage, nil).Send(ctx, m, l.reason); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func msgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

var threeLetters = []struct {
	stage, reason string
	seq           uint64
}{
	{"graph", "graph store unavailable", 1},
	{"otlp", "decode event batch: proto: cannot parse invalid wire-format data", 4},
	{"graph", "graph store unavailable", 2},
}

func TestScanAndGroups(t *testing.T) {
	s := setup(t, 3, threeLetters)
	ctx := context.Background()
	all, err := deadletter.Scan(ctx, s.JS, deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range all {
		// protobuf's errors deliberately vary their spaces.
		got = append(got, strings.ReplaceAll(fmt.Sprintf("%d %s %s %s %d first=%d: %s", l.Seq, l.Stage, l.Stream, l.Subject, l.OrigSeq, l.FirstSeq, deadletter.Summary(l)), "\u00a0", " "))
	}
	want := []string{
		"1 graph EVENTS weft.events.n1.tcp 1 first=1: event batch from node n1 (batch 1): 5 events",
		"2 otlp EVENTS weft.events.n1.tcp 4 first=2: undecodable (7 bytes): decode event batch: proto: cannot parse invalid wire-format data",
		"3 graph EVENTS weft.events.n1.tcp 2 first=3: event batch from node n1 (batch 2): 5 events",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("scan:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	groups := deadletter.Groups(all)
	if len(groups) != 2 || groups[0].Stage != "graph" || groups[0].Count != 2 || !groups[0].Oldest.Equal(all[0].Time) || !groups[0].Newest.Equal(all[2].Time) ||
		groups[1].Stage != "otlp" || groups[1].Count != 1 {
		t.Fatalf("groups: %+v", groups)
	}
	for _, tc := range []struct {
		f    deadletter.Filter
		want string
	}{
		{deadletter.Filter{Stage: "graph"}, "1,3"},
		{deadletter.Filter{Stage: "otlp"}, "2"},
		{deadletter.Filter{Reason: "wire-format"}, "2"},
		{deadletter.Filter{Stage: "graph", Reason: "wire-format"}, ""},
		{deadletter.Filter{Stage: "nope"}, ""},
	} {
		ls, err := deadletter.Scan(ctx, s.JS, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []string
		for _, l := range ls {
			seqs = append(seqs, strconv.FormatUint(l.Seq, 10))
		}
		if strings.Join(seqs, ",") != tc.want {
			t.Errorf("%+v: %v, want %s", tc.f, seqs, tc.want)
		}
	}
}

// TestRedrive: letters go back to their original subject exactly once, with
// the original headers and no DLQ ones, and leave the DLQ.
func TestRedrive(t *testing.T) {
	s := setup(t, 3, threeLetters)
	ctx := context.Background()
	before := msgs(t, s.JS, "EVENTS")
	letters, err := deadletter.Scan(ctx, s.JS, deadletter.Filter{Stage: "graph"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := deadletter.Redrive(ctx, s.JS, letters, deadletter.RedriveOptions{NATS: natsconn.Options{URL: s.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Err != nil || o.Requeued {
			t.Fatalf("DLQ %d: %v (requeued %v)", o.Letter.Seq, o.Err, o.Requeued)
		}
	}
	if got := msgs(t, s.JS, "EVENTS"); got != before+2 {
		t.Fatalf("EVENTS has %d messages, want %d", got, before+2)
	}
	rest, err := deadletter.Scan(ctx, s.JS, deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0].Stage != "otlp" {
		t.Fatalf("left in DLQ: %+v", rest)
	}
	st, _ := s.JS.Stream(ctx, "EVENTS")
	for i, seq := range []uint64{before + 1, before + 2} {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != deadletter.RedriveMsgID(letters[i].Seq) {
			t.Errorf("sequence %d: Nats-Msg-Id %q", seq, id)
		}
		if m.Header.Get(schema.HeaderType) == "" || m.Header.Get(schema.HeaderDLQReason) != "" || m.Subject != "weft.events.n1.tcp" {
			t.Errorf("sequence %d: subject %s headers %v", seq, m.Subject, m.Header)
		}
		if _, err := schema.DecodeEventBatch(m.Data); err != nil {
			t.Errorf("sequence %d: %v", seq, err)
		}
	}
	// A redriven message that fails again can be dead-lettered again: the
	// redrive's publish precondition (Nats-Expected-Stream) does not follow
	// it into the DLQ.
	cons, err := s.JS.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: before + 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := consume.NewDeadLetters(s.JS, "graph", nil).Send(ctx, m, "again"); err != nil {
		t.Fatalf("dead-letter a redriven message: %v", err)
	}
	dlq, _ := s.JS.Stream(ctx, "DLQ")
	if err := dlq.Purge(ctx, jetstream.WithPurgeSubject("weft.dlq.graph")); err != nil {
		t.Fatal(err)
	}
	// Run again on the same scan: nothing left to do, nothing duplicated.
	out, err = deadletter.Redrive(ctx, s.JS, letters, deadletter.RedriveOptions{NATS: natsconn.Options{URL: s.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Err == nil || !strings.Contains(o.Err.Error(), "no longer in the DLQ") {
			t.Fatalf("second run, DLQ %d: %v", o.Letter.Seq, o.Err)
		}
	}
	if got := msgs(t, s.JS, "EVENTS"); got != before+2 {
		t.Fatalf("after a second run EVENTS has %d messages, want %d", got, before+2)
	}
}

// TestRedriveInterrupted: a redrive that published a letter and stopped
// before removing it from the DLQ (the state a crash leaves) is run again:
// the publish is deduplicated by its Msg-Id, the letter leaves the DLQ, and
// EVENTS holds it once.
func TestRedriveInterrupted(t *testing.T) {
	s := setup(t, 2, threeLetters[:1])
	ctx := context.Background()
	letters, err := deadletter.Scan(ctx, s.JS, deadletter.Filter{})
	if err != nil || len(letters) != 1 {
		t.Fatalf("scan: %v %v", letters, err)
	}
	l := letters[0]
	first := nats.NewMsg(l.Subject)
	first.Data = l.Data
	ack, err := s.JS.PublishMsg(ctx, first, jetstream.WithMsgID(deadletter.RedriveMsgID(l.FirstSeq)))
	if err != nil {
		t.Fatal(err)
	}
	before := msgs(t, s.JS, "EVENTS")
	out, err := deadletter.Redrive(ctx, s.JS, letters, deadletter.RedriveOptions{NATS: natsconn.Options{URL: s.URL()}})
	if err != nil || out[0].Err != nil {
		t.Fatalf("redrive: %v %+v", err, out)
	}
	if got := msgs(t, s.JS, "EVENTS"); got != before {
		t.Fatalf("EVENTS has %d messages, want %d: the rerun published the letter again", got, before)
	}
	st, _ := s.JS.Stream(ctx, "EVENTS")
	info, _ := st.Info(ctx)
	if info.State.LastSeq != ack.Sequence {
		t.Fatalf("EVENTS last sequence %d, want %d", info.State.LastSeq, ack.Sequence)
	}
	if n := msgs(t, s.JS, "DLQ"); n != 0 {
		t.Fatalf("DLQ has %d messages", n)
	}
}

// TestRedriveFailsBackToDLQ: a letter whose stream is gone fails again and
// goes back to the DLQ with the new reason (once), keeping its origin;
// once the stream is back, the next redrive delivers it.
func TestRedriveFailsBackToDLQ(t *testing.T) {
	s := setup(t, 2, threeLetters[:1])
	ctx := context.Background()
	if err := s.JS.DeleteStream(ctx, "EVENTS"); err != nil {
		t.Fatal(err)
	}
	letters, _ := deadletter.Scan(ctx, s.JS, deadletter.Filter{})
	out, err := deadletter.Redrive(ctx, s.JS, letters, deadletter.RedriveOptions{NATS: natsconn.Options{URL: s.URL()}, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Err == nil || !out[0].Requeued {
		t.Fatalf("outcome: %+v", out)
	}
	again, err := deadletter.Scan(ctx, s.JS, deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 {
		t.Fatalf("DLQ holds %d letters, want 1", len(again))
	}
	l := again[0]
	if l.Seq == letters[0].Seq || l.FirstSeq != letters[0].Seq || l.Stage != "graph" || l.Stream != "EVENTS" || l.Subject != "weft.events.n1.tcp" || l.OrigSeq != 1 ||
		!strings.HasPrefix(l.Reason, "redrive failed: republish to weft.events.n1.tcp in stream EVENTS: ") {
		t.Fatalf("requeued letter: %+v", l)
	}
	s.CreateStream(t, "EVENTS", "weft.events.>")
	out, err = deadletter.Redrive(ctx, s.JS, again, deadletter.RedriveOptions{NATS: natsconn.Options{URL: s.URL()}})
	if err != nil || out[0].Err != nil {
		t.Fatalf("second redrive: %v %+v", err, out)
	}
	if n := msgs(t, s.JS, "EVENTS"); n != 1 {
		t.Fatalf("EVENTS has %d messages, want 1", n)
	}
	st, _ := s.JS.Stream(ctx, "EVENTS")
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if id := m.Header.Get(jetstream.MsgIDHeader); id != deadletter.RedriveMsgID(letters[0].Seq) {
		t.Fatalf("Msg-Id %q, want the first DLQ sequence's", id)
	}
	if n := msgs(t, s.JS, "DLQ"); n != 0 {
		t.Fatalf("DLQ has %d messages", n)
	}
	if _, err := deadletter.Redrive(ctx, s.JS, nil, deadletter.RedriveOptions{}); errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
