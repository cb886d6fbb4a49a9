package replay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/replay"
	"github.com/weftobs/weft/testenv/natstest"
)

func TestReadRanges(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "CALLS", "weft.calls.>")
	ctx := context.Background()
	var times []time.Time
	for i := 1; i <= 10; i++ {
		subj := "weft.calls.a"
		if i%2 == 0 {
			subj = "weft.calls.b"
		}
		ack, err := s.JS.Publish(ctx, subj, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := s.JS.Stream(ctx, "CALLS")
		m, _ := st.GetMsg(ctx, ack.Sequence)
		times = append(times, m.Time)
		time.Sleep(2 * time.Millisecond) // distinct store timestamps for the time ranges
	}
	for _, tc := range []struct {
		name string
		r    replay.Range
		want string
	}{
		{"all", replay.Range{}, "1,2,3,4,5,6,7,8,9,10"},
		{"from seq", replay.Range{StartSeq: 8}, "8,9,10"},
		{"seq window", replay.Range{StartSeq: 3, UntilSeq: 5}, "3,4,5"},
		{"from time", replay.Range{StartTime: times[6]}, "7,8,9,10"},
		{"time window", replay.Range{StartTime: times[1], UntilTime: times[3]}, "2,3,4"},
		{"filtered", replay.Range{FilterSubjects: []string{"weft.calls.b"}, UntilSeq: 9}, "2,4,6,8"},
		{"filtered, ends early", replay.Range{FilterSubjects: []string{"weft.calls.a"}}, "1,3,5,7,9"},
		{"past the end", replay.Range{StartSeq: 11}, ""},
		{"filter matches nothing", replay.Range{FilterSubjects: []string{"weft.calls.c"}}, ""},
		{"filter matches nothing in the range", replay.Range{FilterSubjects: []string{"weft.calls.b"}, StartSeq: 3, UntilSeq: 3}, ""},
		{"after last time", replay.Range{StartTime: times[9].Add(time.Hour)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			_, err := replay.Read(ctx, s.JS, "CALLS", tc.r, func(m jetstream.Msg) error {
				if got != "" {
					got += ","
				}
				got += string(m.Data())
				return nil
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("read %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := replay.Read(ctx, s.JS, "CALLS", replay.Range{StartSeq: 5, UntilSeq: 2}, func(jetstream.Msg) error { return nil }, nil); err == nil {
		t.Fatal("inverted range accepted")
	}
	if _, err := replay.Read(ctx, s.JS, "NOPE", replay.Range{}, func(jetstream.Msg) error { return nil }, nil); err == nil {
		t.Fatal("missing stream accepted")
	}
}

// TestEmpty: a range that holds nothing says why, in the stream's terms.
func TestEmpty(t *testing.T) {
	s := natstest.Start(t)
	s.CreateStream(t, "CALLS", "weft.calls.>")
	s.CreateStream(t, "EVENTS", "weft.events.>")
	ctx := context.Background()
	for range 3 {
		if _, err := s.JS.Publish(ctx, "weft.calls.a", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, stream string
		r            replay.Range
		want         string // empty: the range is not empty
	}{
		{"all", "CALLS", replay.Range{}, ""},
		{"last", "CALLS", replay.Range{StartSeq: 3}, ""},
		{"past the end", "CALLS", replay.Range{StartSeq: 4}, "nothing to replay: start sequence 4 is past the end of stream CALLS (sequences 1…3)"},
		{"after the newest", "CALLS", replay.Range{StartTime: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)}, "nothing to replay: start time 2999-01-01T00:00:00Z is after the newest message of stream CALLS"},
		{"until before the first", "CALLS", replay.Range{UntilTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}, "nothing to replay: stream CALLS has no messages in the range (sequences 1…3)"},
		{"empty stream", "EVENTS", replay.Range{}, "nothing to replay: stream EVENTS has no messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := replay.Resolve(ctx, s.JS, tc.stream, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			err = b.Empty(tc.stream, tc.r)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("bounds %d…%d: %v", b.First, b.Last, err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, replay.ErrEmptyRange)):
				t.Fatalf("bounds %d…%d: %v, want %q", b.First, b.Last, err, tc.want)
			}
		})
	}
	if _, err := replay.Resolve(ctx, s.JS, "NOPE", replay.Range{}); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("missing stream: %v", err)
	}
}
