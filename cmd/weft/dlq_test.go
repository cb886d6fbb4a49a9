package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/testenv/natstest"
)

// dlqFixture: EVENTS holds two batches of 5 events and one undecodable
// message; stage graph dead-lettered batches 1 and 2, stage otlp the
// undecodable one, as stages do (consume.DeadLetters).
func dlqFixture(t *testing.T) (*natstest.Server, []time.Time) {
	t.Helper()
	s := natstest.Start(t)
	s.CreateStream(t, "EVENTS", "weft.events.>")
	s.CreateStream(t, "DLQ", "weft.dlq.>")
	ctx := context.Background()
	s.PublishTCPEvents(t, "n1", 10, 5)
	for _, l := range []struct {
		stage, reason string
		seq           uint64
	}{
		{"graph", "graph store unavailable", 1},
		{"graph", "graph store unavailable", 2},
		{"otlp", "undecodable batch", 3},
	} {
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
	st, _ := s.JS.Stream(ctx, "DLQ")
	var times []time.Time
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, m.Time)
	}
	return s, times
}

func runWeft(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	p := start(t, args...)
	err := <-p.done
	return p.stdout.String(), p.stderr.String(), err
}

func streamState(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func TestDLQLsShow(t *testing.T) {
	s, times := dlqFixture(t)
	ts := func(i int) string { return times[i].UTC().Format(time.RFC3339) }
	out, errOut, err := runWeft(t, "dlq", "ls", "--nats-url", s.URL())
	if err != nil {
		t.Fatalf("dlq ls: %v\n%s", err, errOut)
	}
	want := fmt.Sprintf(`STAGE  REASON                   COUNT  OLDEST                NEWEST
graph  graph store unavailable  2      %s  %s
otlp   undecodable batch        1      %s  %s
`, ts(0), ts(1), ts(2), ts(2))
	if out != want {
		t.Fatalf("dlq ls:\n%s\nwant\n%s", out, want)
	}

	out, errOut, err = runWeft(t, "dlq", "show", "--stage", "graph", "--limit", "1", "--nats-url", s.URL())
	if err != nil {
		t.Fatalf("dlq show: %v\n%s", err, errOut)
	}
	want = fmt.Sprintf(`DLQ 1      %s  stage graph
  reason   graph store unavailable
  from     EVENTS sequence 1, subject weft.events.n1.tcp
  payload  event batch from node n1 (batch 1): 5 events

… and 1 more (--limit 0 shows all)
`, ts(0))
	if out != want {
		t.Fatalf("dlq show:\n%s\nwant\n%s", out, want)
	}
	out, _, err = runWeft(t, "dlq", "show", "--stage", "otlp", "--nats-url", s.URL())
	if err != nil || !strings.Contains(out, "  payload  undecodable (7 bytes): decode event batch: ") {
		t.Fatalf("dlq show --stage otlp: %v\n%s", err, out)
	}

	// A missing DLQ stream reads as streams info says it.
	if err := s.JS.DeleteStream(context.Background(), "DLQ"); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = runWeft(t, "dlq", "ls", "--nats-url", s.URL())
	if err == nil || !strings.Contains(errOut, "stream DLQ: not found (weft streams ls lists them)") {
		t.Fatalf("dlq ls without DLQ: %v\n%s", err, errOut)
	}
}

// TestDLQRedrive: --dry-run changes nothing; redrive moves the selected
// letters back once; a second redrive finds nothing to do.
func TestDLQRedrive(t *testing.T) {
	s, _ := dlqFixture(t)
	events, dlq := streamState(t, s.JS, "EVENTS"), streamState(t, s.JS, "DLQ")

	out, errOut, err := runWeft(t, "dlq", "redrive", "--stage", "graph", "--dry-run", "--nats-url", s.URL())
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, errOut)
	}
	want := `would redrive DLQ 1 (stage graph) to weft.events.n1.tcp in EVENTS: graph store unavailable
would redrive DLQ 2 (stage graph) to weft.events.n1.tcp in EVENTS: graph store unavailable
dry run: 2 dead letters would be redriven; nothing changed
`
	if out != want {
		t.Fatalf("dry run:\n%s\nwant\n%s", out, want)
	}
	if e, d := streamState(t, s.JS, "EVENTS"), streamState(t, s.JS, "DLQ"); e.Msgs != events.Msgs || e.LastSeq != events.LastSeq || d.Msgs != dlq.Msgs || d.LastSeq != dlq.LastSeq {
		t.Fatalf("dry run changed streams: EVENTS %+v → %+v, DLQ %+v → %+v", events, e, dlq, d)
	}

	out, errOut, err = runWeft(t, "dlq", "redrive", "--reason", "store unavailable", "--nats-url", s.URL())
	if err != nil {
		t.Fatalf("redrive: %v\n%s\n%s", err, out, errOut)
	}
	want = `redriven DLQ 1 (stage graph) to weft.events.n1.tcp in EVENTS
redriven DLQ 2 (stage graph) to weft.events.n1.tcp in EVENTS
redriven 2 of 2 dead letters
`
	if out != want {
		t.Fatalf("redrive:\n%s\nwant\n%s", out, want)
	}
	if e, d := streamState(t, s.JS, "EVENTS"), streamState(t, s.JS, "DLQ"); e.Msgs != events.Msgs+2 || d.Msgs != 1 {
		t.Fatalf("after redrive EVENTS has %d messages (want %d), DLQ %d (want 1)", e.Msgs, events.Msgs+2, d.Msgs)
	}
	out, _, err = runWeft(t, "dlq", "redrive", "--stage", "graph", "--nats-url", s.URL())
	if err != nil || out != "no dead letters match\n" {
		t.Fatalf("second redrive: %v\n%s", err, out)
	}
	if e := streamState(t, s.JS, "EVENTS"); e.Msgs != events.Msgs+2 {
		t.Fatalf("after a second redrive EVENTS has %d messages, want %d", e.Msgs, events.Msgs+2)
	}
}

func TestDLQHelp(t *testing.T) {
	for _, args := range [][]string{{"dlq"}, {"dlq", "ls"}, {"dlq", "show"}, {"dlq", "redrive"}} {
		out, errOut, err := runWeft(t, append(args, "--help")...)
		if err != nil || !strings.Contains(out, "--nats-url") || !strings.Contains(out, "Usage:") {
			t.Errorf("weft %v --help: %v\n%s%s", args, err, out, errOut)
		}
	}
}
