package otlprecv

import (
	"encoding/hex"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Attrs is a flattened attribute list: string, int64, float64, bool,
// []byte or []any values.
type Attrs map[string]any

// Span is one received span with its resource and scope.
type Span struct {
	Resource Attrs
	Scope    string
	Attrs    Attrs
	// TraceID, SpanID and ParentSpanID are hex; ParentSpanID is "" for a
	// root span.
	TraceID, SpanID, ParentSpanID string
	Name                          string
	Kind                          tracepb.Span_SpanKind
	Start, End                    time.Time
	Status                        *tracepb.Status
	// Arrived is when the receiver accepted the span.
	Arrived time.Time
}

// Spans returns every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Span
	for _, req := range r.traces {
		for _, rs := range req.GetResourceSpans() {
			res := flatten(rs.GetResource().GetAttributes())
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					sp := Span{
						Resource: res, Scope: ss.GetScope().GetName(), Attrs: flatten(s.GetAttributes()),
						TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
						ParentSpanID: hex.EncodeToString(s.GetParentSpanId()),
						Name:         s.GetName(), Kind: s.GetKind(),
						Start: time.Unix(0, int64(s.GetStartTimeUnixNano())), End: time.Unix(0, int64(s.GetEndTimeUnixNano())),
						Status: s.GetStatus(),
					}
					if i := len(out); i < len(r.arrived) {
						sp.Arrived = r.arrived[i]
					}
					out = append(out, sp)
				}
			}
		}
	}
	return out
}

// LogRecord is one received log record with its resource and scope.
type LogRecord struct {
	Resource     Attrs
	Scope        string
	Attrs        Attrs
	EventName    string
	Body         any
	Severity     logspb.SeverityNumber
	SeverityText string
	Time         time.Time
}

// LogRecords returns every log record received so far, in arrival order.
func (r *Receiver) LogRecords() []LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LogRecord
	for _, req := range r.logs {
		for _, rl := range req.GetResourceLogs() {
			res := flatten(rl.GetResource().GetAttributes())
			for _, sl := range rl.GetScopeLogs() {
				for _, l := range sl.GetLogRecords() {
					out = append(out, LogRecord{
						Resource: res, Scope: sl.GetScope().GetName(), Attrs: flatten(l.GetAttributes()),
						EventName: l.GetEventName(), Body: value(l.GetBody()),
						Severity: l.GetSeverityNumber(), SeverityText: l.GetSeverityText(),
						Time: time.Unix(0, int64(l.GetTimeUnixNano())),
					})
				}
			}
		}
	}
	return out
}

// MetricPoint is one received data point of a sum or histogram metric.
type MetricPoint struct {
	Resource Attrs
	Scope    string
	Name     string
	Unit     string
	Attrs    Attrs
	// Value is a sum's value (int64 or float64); for a histogram it is the
	// count, and Sum the sum of its observations.
	Value any
	Sum   float64
	Time  time.Time
}

// MetricPoints returns every data point received so far, in arrival order.
// Cumulative metrics repeat in every export; use Latest for the last value.
func (r *Receiver) MetricPoints() []MetricPoint {
	r.mu.Lock()
	reqs := append([]*colmetrics.ExportMetricsServiceRequest(nil), r.metrics...)
	r.mu.Unlock()
	var out []MetricPoint
	for _, req := range reqs {
		for _, rm := range req.GetResourceMetrics() {
			res := flatten(rm.GetResource().GetAttributes())
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					base := MetricPoint{Resource: res, Scope: sm.GetScope().GetName(), Name: m.GetName(), Unit: m.GetUnit()}
					add := func(attrs []*commonpb.KeyValue, v any, sum float64, t uint64) {
						p := base
						p.Attrs, p.Value, p.Sum, p.Time = flatten(attrs), v, sum, time.Unix(0, int64(t))
						out = append(out, p)
					}
					switch d := m.GetData().(type) {
					case *metricspb.Metric_Sum:
						for _, dp := range d.Sum.GetDataPoints() {
							add(dp.GetAttributes(), numberValue(dp), 0, dp.GetTimeUnixNano())
						}
					case *metricspb.Metric_Gauge:
						for _, dp := range d.Gauge.GetDataPoints() {
							add(dp.GetAttributes(), numberValue(dp), 0, dp.GetTimeUnixNano())
						}
					case *metricspb.Metric_Histogram:
						for _, dp := range d.Histogram.GetDataPoints() {
							add(dp.GetAttributes(), int64(dp.GetCount()), dp.GetSum(), dp.GetTimeUnixNano())
						}
					}
				}
			}
		}
	}
	return out
}

func numberValue(dp *metricspb.NumberDataPoint) any {
	if v, ok := dp.GetValue().(*metricspb.NumberDataPoint_AsInt); ok {
		return v.AsInt
	}
	return dp.GetAsDouble()
}

func dataPoints(m *metricspb.Metric) int {
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Sum:
		return len(d.Sum.GetDataPoints())
	case *metricspb.Metric_Gauge:
		return len(d.Gauge.GetDataPoints())
	case *metricspb.Metric_Histogram:
		return len(d.Histogram.GetDataPoints())
	case *metricspb.Metric_ExponentialHistogram:
		return len(d.ExponentialHistogram.GetDataPoints())
	case *metricspb.Metric_Summary:
		return len(d.Summary.GetDataPoints())
	}
	return 0
}

func flatten(kvs []*commonpb.KeyValue) Attrs {
	out := make(Attrs, len(kvs))
	for _, kv := range kvs {
		out[kv.GetKey()] = value(kv.GetValue())
	}
	return out
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return flatten(x.KvlistValue.GetValues())
	}
	return nil
}
