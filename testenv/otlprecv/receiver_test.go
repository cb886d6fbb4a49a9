package otlprecv

import (
	"testing"

	"google.golang.org/protobuf/proto"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// TestCountSpans: the count-only codec counts what a full decode finds.
func TestCountSpans(t *testing.T) {
	req := &coltrace.ExportTraceServiceRequest{}
	want := 0
	for r := range 3 {
		rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(r)}}}}}}
		for s := range r + 1 {
			ss := &tracepb.ScopeSpans{SchemaUrl: "x"}
			for i := range 5*s + 1 {
				ss.Spans = append(ss.Spans, &tracepb.Span{Name: "s", SpanId: []byte{1, 2, 3, 4, 5, 6, 7, byte(i)}})
				want++
			}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		req.ResourceSpans = append(req.ResourceSpans, rs)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := countSpans(b)
	if err != nil || got != want {
		t.Fatalf("countSpans = %d, %v; want %d", got, err, want)
	}
	if _, err := countSpans(b[:len(b)-3]); err == nil {
		t.Error("truncated request counted without error")
	}
}
