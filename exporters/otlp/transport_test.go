package otlp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// TestStageTLSAndAuth exports over TLS with a test CA to a receiver that
// requires an auth header, configured through the topology config and
// through the standard OTEL_EXPORTER_OTLP_* variables.
func TestStageTLSAndAuth(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		viaEnv   bool
	}{
		{otlp.ProtocolGRPC, false},
		{otlp.ProtocolHTTPProtobuf, false},
		{otlp.ProtocolGRPC, true},
		{otlp.ProtocolHTTPProtobuf, true},
	} {
		name := tc.protocol + "/config"
		if tc.viaEnv {
			name = tc.protocol + "/env"
		}
		t.Run(name, func(t *testing.T) {
			ca := otlprecv.NewTestCA(t)
			recv := otlprecv.Start(t, otlprecv.WithTLS(ca.ServerTLS(t)), otlprecv.WithRequiredHeader("Authorization", "Bearer s3cret"))
			s := newNATS(t)
			calls := workload(3)
			publishCalls(t, s.NC, calls, 2)

			cfg := baseConfig(recv, tc.protocol)
			if cfg.Endpoint[:8] != "https://" {
				t.Fatalf("endpoint %q is not TLS", cfg.Endpoint)
			}
			if tc.viaEnv {
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", cfg.Endpoint)
				t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
				t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20s3cret")
				t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.CertFile)
				cfg.Endpoint, cfg.Protocol = "", ""
			} else {
				cfg.Headers = map[string]string{"Authorization": "Bearer s3cret"}
				cfg.TLS.CAFile = ca.CertFile
			}
			_, counters := startStage(t, s, "otlp", cfg, allInputs[:1], nil)
			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got != want {
					return fmt.Errorf("%d spans, want %d (%d rejected)", got, want, recv.Rejected())
				}
				if recv.MetricPointCount() == 0 {
					return fmt.Errorf("no metrics yet")
				}
				return nil
			})
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
			if recv.Rejected() != 0 || counters.Snapshot().Errors != 0 {
				t.Errorf("%d exports rejected, %d export errors", recv.Rejected(), counters.Snapshot().Errors)
			}
		})
	}
}

// TestStageWrongCredentialsHoldData: without the header (or trusting the
// wrong CA) nothing is accepted, nothing is acked, the stream holds it.
func TestStageWrongCredentialsHoldData(t *testing.T) {
	ca := otlprecv.NewTestCA(t)
	other := otlprecv.NewTestCA(t)
	recv := otlprecv.Start(t, otlprecv.WithTLS(ca.ServerTLS(t)), otlprecv.WithRequiredHeader("Authorization", "Bearer s3cret"))
	s := newNATS(t)
	publishCalls(t, s.NC, workload(3), 2)

	for i, tc := range []struct {
		name     string
		protocol string
		mutate   func(*otlp.Config)
	}{
		{"no header", otlp.ProtocolGRPC, func(c *otlp.Config) { c.TLS.CAFile = ca.CertFile }},
		{"wrong CA", otlp.ProtocolGRPC, func(c *otlp.Config) {
			c.TLS.CAFile = other.CertFile
			c.Headers = map[string]string{"Authorization": "Bearer s3cret"}
		}},
		// HTTP 401 is refused for good by OTLP's rules, but it is about
		// the backend, not the batch: held, not dead-lettered.
		{"no header over HTTP", otlp.ProtocolHTTPProtobuf, func(c *otlp.Config) { c.TLS.CAFile = ca.CertFile }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(recv, tc.protocol)
			cfg.Metrics.Enabled = new(false)
			tc.mutate(&cfg)
			st, counters := startStage(t, s, "otlp-"+fmt.Sprint(i), cfg, allInputs[:1], nil)
			natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if counters.Snapshot().Errors < 3 {
					return fmt.Errorf("%d failed exports", counters.Snapshot().Errors)
				}
				return nil
			})
			if recv.SpanCount() != 0 || counters.Snapshot().Acked != 0 || counters.Snapshot().DLQ != 0 {
				t.Errorf("%d spans accepted, counters %+v: want nothing accepted, acked or dead-lettered", recv.SpanCount(), counters.Snapshot())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = st.Shutdown(ctx)
		})
	}
}

// TestStageDeadLettersUndecodable: a message that does not decode goes to
// the DLQ; the ones around it are exported.
func TestStageDeadLettersUndecodable(t *testing.T) {
	s := newNATS(t)
	recv := otlprecv.Start(t)
	calls := workload(2)
	publishCalls(t, s.NC, calls[:2], 10)
	bad := nats.NewMsg(schema.CallSubject("node-a"))
	bad.Header.Set(schema.HeaderType, schema.TypeName(&schema.CallBatch{}))
	bad.Data = []byte("\xff\xff not protobuf")
	if _, err := s.JS.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	publishCalls(t, s.NC, calls[2:], 10)

	_, counters := startStage(t, s, "otlp", baseConfig(recv, otlp.ProtocolGRPC), allInputs[:1], nil)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got, want := recv.SpanCount(), uint64(wantSpans(calls)); got != want {
			return fmt.Errorf("%d spans, want %d", got, want)
		}
		if counters.Snapshot().DLQ != 1 {
			return fmt.Errorf("%d dead-lettered, want 1", counters.Snapshot().DLQ)
		}
		return nil
	})
	dlq, err := s.JS.Stream(context.Background(), schema.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(context.Background(), schema.DLQSubject("otlp"))
	if err != nil {
		t.Fatalf("dlq message: %v", err)
	}
	if m.Header.Get(schema.HeaderDLQReason) == "" || string(m.Data) != string(bad.Data) {
		t.Errorf("dlq message %q reason %q", m.Data, m.Header.Get(schema.HeaderDLQReason))
	}
}

// TestReplayReexportSameIDs: replaying CALLS to a new backend, as
// `weft replay --to otlp` does, yields the same trace and span ids.
func TestReplayReexportSameIDs(t *testing.T) {
	s := newNATS(t)
	first := otlprecv.Start(t)
	calls := workload(6)
	publishCalls(t, s.NC, calls, 5)
	_, _ = startStage(t, s, "otlp", baseConfig(first, otlp.ProtocolGRPC), allInputs[:1], nil)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got, want := first.SpanCount(), uint64(wantSpans(calls)); got != want {
			return fmt.Errorf("%d spans, want %d", got, want)
		}
		return nil
	})

	second := otlprecv.Start(t)
	_, _ = startStage(t, s, "otlp", baseConfig(second, otlp.ProtocolHTTPProtobuf), allInputs[:1],
		&stage.Replay{Durable: "replay-otlp", StartTime: time.Now().Add(-time.Hour)})
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got, want := second.SpanCount(), uint64(wantSpans(calls)); got != want {
			return fmt.Errorf("%d spans replayed, want %d", got, want)
		}
		return nil
	})
	ids := func(spans []otlprecv.Span) map[string]string {
		out := map[string]string{}
		for _, sp := range spans {
			out[sp.SpanID] = sp.TraceID + "/" + sp.ParentSpanID + "/" + sp.Name + "/" + sp.Start.String()
		}
		return out
	}
	a, b := ids(first.Spans()), ids(second.Spans())
	if len(a) != wantSpans(calls) {
		t.Fatalf("%d distinct span ids, want %d", len(a), wantSpans(calls))
	}
	for id, v := range a {
		if b[id] != v {
			t.Errorf("span %s: first export %q, replay %q", id, v, b[id])
		}
	}
}

// TestSelfTraces: with selfTraces on, the stage also sends a span per
// exported batch, as service "weft"; off (the default) it sends none.
func TestSelfTraces(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint(on), func(t *testing.T) {
			s := newNATS(t)
			recv := otlprecv.Start(t)
			calls := workload(3)
			publishCalls(t, s.NC, calls, 100)
			cfg := baseConfig(recv, otlp.ProtocolGRPC)
			cfg.SelfTraces = on
			st, _ := startStage(t, s, "otlp", cfg, allInputs[:1], nil)
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := st.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			self := 0
			for _, sp := range recv.Spans() {
				if sp.Resource["service.name"] == "weft" {
					self++
					if sp.Name != "weft.otlp.export" || sp.Attrs["weft.batch.spans"] == nil {
						t.Errorf("self span %q attrs %v", sp.Name, sp.Attrs)
					}
				}
			}
			if on && self == 0 || !on && self != 0 {
				t.Errorf("selfTraces %v: %d self spans", on, self)
			}
			if got := len(recv.Spans()) - self; got != wantSpans(calls) {
				t.Errorf("%d call spans, want %d", got, wantSpans(calls))
			}
		})
	}
}

// TestStageDeadLettersRejectedBatch: a batch the backend refuses as
// invalid (gRPC InvalidArgument, HTTP 400) is exported again message by
// message, and the one message it refuses on its own goes to the DLQ
// with the reason; everything around it is exported: the stream is not
// held behind it. Spans exported plus spans dead-lettered are every span.
func TestStageDeadLettersRejectedBatch(t *testing.T) {
	for _, protocol := range []string{otlp.ProtocolGRPC, otlp.ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			s := newNATS(t)
			recv := otlprecv.Start(t)
			const badPort = 40007 // tcpCall(7)'s client port
			recv.SetRejectSpans(func(sp *tracepb.Span) bool {
				for _, kv := range sp.GetAttributes() {
					if kv.GetValue().GetIntValue() == badPort {
						return true
					}
				}
				return false
			})
			calls := workload(12)
			publishCalls(t, s.NC, calls, 2)
			cfg := baseConfig(recv, protocol)
			cfg.Batch.MaxItems = 4
			_, counters := startStage(t, s, "otlp", cfg, allInputs[:1], nil)
			waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)

			dlqSpans, badSeen := 0, false
			dlq, err := s.JS.Stream(context.Background(), schema.StreamDLQ)
			if err != nil {
				t.Fatal(err)
			}
			info, err := dlq.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
				m, err := dlq.GetMsg(context.Background(), seq)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(m.Header.Get(schema.HeaderDLQReason), "backend rejected the batch") {
					t.Errorf("dlq message %d: reason %q", seq, m.Header.Get(schema.HeaderDLQReason))
				}
				b, err := schema.DecodeCallBatch(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				dlqSpans += wantSpans(b.GetCalls())
				for _, c := range b.GetCalls() {
					badSeen = badSeen || c.GetClient().GetPort() == badPort
				}
			}
			snap := counters.Snapshot()
			t.Logf("%d spans exported, %d dead-lettered in %d messages; %d refused exports", recv.SpanCount(), dlqSpans, snap.DLQ, recv.Invalid())
			if !badSeen || snap.DLQ == 0 || recv.Invalid() == 0 {
				t.Errorf("the refused call is not in the DLQ (%d messages there, %d refused exports)", snap.DLQ, recv.Invalid())
			}
			if got := int(recv.SpanCount()) + dlqSpans; got != wantSpans(calls) {
				t.Errorf("%d spans exported + %d dead-lettered = %d, want %d", recv.SpanCount(), dlqSpans, got, wantSpans(calls))
			}
			if snap.DLQ != 1 {
				t.Errorf("%d messages dead-lettered, want 1: only the refused call's", snap.DLQ)
			}
		})
	}
}

// TestStageRefusesEverythingHolds: a backend that refuses every export as
// invalid (a proxy answering 400 to all) is not a bad message: after a
// bounded number of refusals the stage holds the stream instead of
// dead-lettering it, and exports the rest once the backend takes data.
func TestStageRefusesEverythingHolds(t *testing.T) {
	s := newNATS(t)
	recv := otlprecv.Start(t)
	recv.SetRejectSpans(func(*tracepb.Span) bool { return true })
	calls := workload(100) // 234 calls, one per message
	publishCalls(t, s.NC, calls, 1)
	cfg := baseConfig(recv, otlp.ProtocolHTTPProtobuf)
	cfg.Batch.MaxItems = 8
	_, counters := startStage(t, s, "otlp", cfg, allInputs[:1], nil)
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := recv.Invalid(); n < 100 {
			return fmt.Errorf("%d refused exports", n)
		}
		return nil
	})
	held := counters.Snapshot()
	if held.DLQ == 0 || held.DLQ > 64 || held.Acked > held.DLQ { // a dead letter's ack may not be counted yet
		t.Errorf("refusing everything: %d dead-lettered, %d acked; want at most 64 dead-lettered and nothing else acked", held.DLQ, held.Acked)
	}
	recv.SetRejectSpans(nil)
	waitAllAcked(t, s, "otlp-CALLS", schema.StreamCalls)
	// The stage counts an ack once the server has answered it: the
	// server's ack floor can be there a moment before the counter.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := counters.Snapshot().Acked; int(n) < len(calls) {
			return fmt.Errorf("%d acked counted, want %d", n, len(calls))
		}
		return nil
	})
	snap := counters.Snapshot()
	t.Logf("dead-lettered %d before holding; %d spans exported after", snap.DLQ, recv.SpanCount())
	if snap.DLQ != held.DLQ || int(snap.Acked) != len(calls) {
		t.Errorf("after: %d dead-lettered (was %d), %d acked, want %d acked and no more dead letters", snap.DLQ, held.DLQ, snap.Acked, len(calls))
	}
}
