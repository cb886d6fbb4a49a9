package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/topology"
)

// FuzzStageConfig: a stage's config: block, for every kind this binary
// links, decodes into the kind's config and validates, or is reported with
// file:line; never a panic.
func FuzzStageConfig(f *testing.F) {
	for _, c := range []string{
		"{probes: [process, tcp, unix], required: false}",
		"{store: embedded}", "{store: neo4j}", "{rate: 200}", "{rate: -1}",
		"{endpoint: \"http://x:4318\", protocol: grpc, signals: [traces]}",
		"{batch: 0, flushEvery: 1d}", "[1, 2]", "x", "{openAfter: 250ms}",
	} {
		for k := range uint8(8) {
			f.Add(k, c)
		}
	}
	reg := registry()
	names := reg.Names()
	f.Fuzz(func(t *testing.T, kind uint8, config string) {
		name := names[int(kind)%len(names)]
		k, _ := reg.Lookup(name)
		var b strings.Builder
		b.WriteString("apiVersion: weft.dev/v1\nkind: Topology\nmetadata: {name: f}\nstreams:\n  EVENTS: {subjects: [\"weft.events.>\"]}\n  CALLS: {subjects: [\"weft.calls.>\"]}\nstages:\n")
		b.WriteString("  - name: s\n    kind: " + name + "\n    deploy: " + string(k.Deploy[0]) + "\n")
		switch {
		case k.Source:
			b.WriteString("    outputs: [EVENTS]\n")
		default:
			b.WriteString("    inputs: [EVENTS]\n")
		}
		b.WriteString("    config:\n")
		for line := range strings.SplitSeq(config, "\n") {
			b.WriteString("      " + line + "\n")
		}
		_, err := topology.Parse("f.yaml", []byte(b.String()), reg)
		if err == nil {
			return
		}
		var te *topology.Error
		if !errors.As(err, &te) || len(te.Issues) == 0 {
			t.Fatalf("error %v is no *topology.Error with issues", err)
		}
		for _, is := range te.Issues {
			if is.Line <= 0 {
				t.Fatalf("issue without a line: %s", is)
			}
		}
	})
}

// FuzzReplayRange: whatever --since, --start-time, --start-seq and --until
// hold, weft replay gets a valid range or an error naming the flag.
func FuzzReplayRange(f *testing.F) {
	f.Add(int64(time.Hour), "", uint64(0), "")
	f.Add(int64(0), "2026-11-21T09:00:00Z", uint64(0), "10m")
	f.Add(int64(0), "", uint64(5), "12")
	f.Add(int64(time.Minute), "", uint64(0), "2026-11-21T09:00:00+01:00")
	f.Add(int64(0), "", uint64(1), "-5m")
	f.Add(int64(0), "", uint64(7), "3")
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, since int64, startTime string, startSeq uint64, until string) {
		o := replayOptions{since: time.Duration(since), startTime: startTime, startSeq: startSeq, until: until}
		r, err := o.rangeOf(now)
		if err != nil {
			if !strings.Contains(err.Error(), "--") && !strings.Contains(err.Error(), "sequence") && !strings.Contains(err.Error(), "time") {
				t.Fatalf("error names no flag: %v", err)
			}
			return
		}
		if since < 0 {
			t.Fatalf("--since %v accepted", time.Duration(since))
		}
		if r.UntilTime.After(now) && time.Duration(since) >= 0 {
			if _, perr := time.Parse(time.RFC3339, until); perr != nil {
				t.Fatalf("--until %q: a duration ago ends after now (%v)", until, r.UntilTime)
			}
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("rangeOf gave a range that does not validate: %v", err)
		}
		if r.UntilSeq != 0 && r.StartSeq != 0 && r.UntilSeq < r.StartSeq {
			t.Fatalf("until %d before start %d", r.UntilSeq, r.StartSeq)
		}
	})
}
