// Package stagetest runs the correlator's stages in tests: a Host over a
// test NATS server, publishing scenario batches as a collector would, and
// reading CALLS back.
package stagetest

import (
	"context"
	"github.com/weftobs/weft/correlator/graph"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// Host is a stage.Host for tests.
type Host struct {
	JS  jetstream.JetStream
	Mux *http.ServeMux

	mu     sync.Mutex
	Errors []error
}

// NewHost returns a host over js.
func NewHost(js jetstream.JetStream) *Host { return &Host{JS: js, Mux: http.NewServeMux()} }

func (h *Host) JetStream() jetstream.JetStream         { return h.JS }
func (h *Host) Handle(pattern string, hd http.Handler) { h.Mux.Handle(pattern, hd) }
func (h *Host) Fatal(err error) {
	h.mu.Lock()
	h.Errors = append(h.Errors, err)
	h.mu.Unlock()
}

// Get serves a GET of path from the host's mux.
func (h *Host) Get(path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.Mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// Streams creates EVENTS, CALLS and DLQ on s.
func Streams(t testing.TB, s *natstest.Server) {
	s.CreateStream(t, schema.StreamEvents, "weft.events.>")
	s.CreateStream(t, schema.StreamCalls, "weft.calls.>")
	s.CreateStream(t, schema.StreamDLQ, "weft.dlq.>")
}

// Connect opens a second connection to s (one a test can kill).
func Connect(t testing.TB, s *natstest.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// PublishEvents publishes batches as the collector does, one message each.
func PublishEvents(t testing.TB, js jetstream.JetStream, batches []*schema.EventBatch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, b := range batches {
		kind := schema.KindTCP
		switch b.GetEvents()[0].GetBody().(type) {
		case *schema.Event_Pod:
			kind = schema.KindPod
		case *schema.Event_Unix:
			kind = schema.KindUnix
		}
		PublishRaw(t, ctx, js, schema.EventSubject(b.GetOrigin().GetNode(), kind), b,
			publish.MsgID(b.GetOrigin().GetNode(), b.GetOrigin().GetBootId(), b.GetOrigin().GetEpoch(), b.GetOrigin().GetSeq()), len(b.GetEvents()))
	}
}

// PublishRaw publishes one batch message with weft's headers.
func PublishRaw(t testing.TB, ctx context.Context, js jetstream.JetStream, subject string, m proto.Message, id string, items int) {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(schema.HeaderType, schema.TypeName(m))
	msg.Header.Set(schema.HeaderItems, strconv.Itoa(items))
	if id != "" {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

// ReadCalls returns every call on CALLS so far, in stream order.
func ReadCalls(t testing.TB, js jetstream.JetStream) []*schema.Call {
	t.Helper()
	return ReadItems(t, js, (*schema.CallBatch).GetCalls)
}

// ReadItems returns the items of one kind (calls, ended or changed pods:
// (*schema.CallBatch).GetPodsEnded) of every batch on CALLS so far, in
// stream order.
func ReadItems[T any](t testing.TB, js jetstream.JetStream, items func(*schema.CallBatch) []T) []T {
	t.Helper()
	var out []T
	for _, b := range ReadCallBatches(t, js) {
		out = append(out, items(b)...)
	}
	return out
}

// ReadCallBatches is every batch on CALLS, in stream order.
func ReadCallBatches(t testing.TB, js jetstream.JetStream) []*schema.CallBatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, schema.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*schema.CallBatch
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := schema.DecodeCallBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// Dedupe keeps the first call of every id, as the graph stage does.
func Dedupe(calls []*schema.Call) (out []*schema.Call, dups int) {
	// The graph stage's own rule: a call sharing a connection half (or,
	// naming none, its id) with one already counted is counted once.
	seen := graph.NewSeen(len(calls) + 1)
	for _, c := range calls {
		if !seen.AddCall(c) {
			dups++
			continue
		}
		out = append(out, c)
	}
	return out, dups
}

// PublishPartitioned publishes batches as a collector does on a stream
// of n partitions (PartitionMessages), one at a time.
func PublishPartitioned(t testing.TB, js jetstream.JetStream, batches []*schema.EventBatch, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range PartitionMessages(t, batches, n) {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish %s: %v", m.Subject, err)
		}
	}
}

// PartitionMessages are batches as a collector publishes them on a stream
// of n partitions: each batch split by kind and partition
// (schema.Partition), one message per part, each with its own Msg-Id.
func PartitionMessages(t testing.TB, batches []*schema.EventBatch, n int) []*nats.Msg {
	t.Helper()
	type part struct {
		kind string
		p    int
	}
	var out []*nats.Msg
	for _, b := range batches {
		parts := map[part]*schema.EventBatch{}
		var order []part
		for _, ev := range b.GetEvents() {
			k := part{kind: schema.KindTCP, p: schema.Partition(ev, n)}
			switch ev.GetBody().(type) {
			case *schema.Event_Pod:
				k.kind = schema.KindPod
			case *schema.Event_Unix:
				k.kind = schema.KindUnix
			}
			pb := parts[k]
			if pb == nil {
				pb = &schema.EventBatch{SchemaVersion: b.GetSchemaVersion(), Origin: b.GetOrigin()}
				parts[k] = pb
				order = append(order, k)
			}
			pb.Events = append(pb.Events, ev)
		}
		o := b.GetOrigin()
		id := publish.MsgID(o.GetNode(), o.GetBootId(), o.GetEpoch(), o.GetSeq())
		for _, k := range order {
			data, err := proto.Marshal(parts[k])
			if err != nil {
				t.Fatal(err)
			}
			msg := nats.NewMsg(schema.PartitionSubject(o.GetNode(), k.kind, k.p, n))
			msg.Data = data
			msg.Header.Set(schema.HeaderType, schema.TypeName(parts[k]))
			msg.Header.Set(schema.HeaderItems, strconv.Itoa(len(parts[k].GetEvents())))
			msg.Header.Set(jetstream.MsgIDHeader, id+"-"+k.kind+"-"+strconv.Itoa(k.p))
			out = append(out, msg)
		}
	}
	return out
}
