package otlprecv

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// countCodec is the gRPC codec of a count-only receiver: it counts the
// spans of a trace export by walking the wire format, without decoding
// them, so a benchmark charges the exporter under test, not the
// receiver's decoding. Everything else it hands to the proto codec.
type countCodec struct{ proto encoding.CodecV2 }

func (c countCodec) Name() string                           { return "proto" }
func (c countCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c countCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*coltrace.ExportTraceServiceRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	n, err := countSpans(buf.ReadOnlyData())
	if err != nil {
		return err
	}
	// Stand-in spans: only their number is kept.
	req.ResourceSpans = []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: make([]*tracepb.Span, n)}}}}
	return nil
}

// countSpans counts field 2 (spans) of field 2 (scope_spans) of field 1
// (resource_spans) of an ExportTraceServiceRequest.
func countSpans(b []byte) (int, error) {
	n := 0
	err := eachField(b, 1, func(rs []byte) error {
		return eachField(rs, 2, func(ss []byte) error {
			return eachField(ss, 2, func([]byte) error { n++; return nil })
		})
	})
	return n, err
}

func eachField(b []byte, want protowire.Number, f func([]byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("otlp request: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == want && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("otlp request: %w", protowire.ParseError(m))
			}
			if err := f(v); err != nil {
				return err
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("otlp request: %w", protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil
}
