// Package otlp is the otlp stage kind: it forwards weft's streams to any
// OpenTelemetry backend over OTLP (gRPC or HTTP/protobuf), with the
// OpenTelemetry SDK's own exporters.
//
//   - Each call on CALLS becomes a CLIENT span on the caller and a SERVER
//     span, its child, on the callee, with the semantic conventions'
//     network attributes and each endpoint's Kubernetes and process
//     resource. Trace and span ids are derived from the call's id, so a
//     replayed call is exported with the same ids (IDsFor).
//   - Calls also feed per-edge metrics (calls, bytes each way, duration,
//     errors) with bounded cardinality, next to pipeline-health metrics.
//   - Process exec/exit events on EVENTS become log records carrying the
//     pod's resource.
//
// A stream message is acked only after everything it produced was
// accepted by the backend. Spans and log records are exported
// synchronously in batches the stage builds itself (not through the SDK's
// BatchSpanProcessor, whose drops are silent); while the backend fails, the
// stage retries with backoff and holds the messages unacked, bounded by
// its batch and queue sizes, so the stream keeps the rest.
//
// The package owns the mapping to OpenTelemetry and the export; it reads
// streams only through streams/consume and imports no other stage kind.
// It is the only package that imports the OTLP exporters.
package otlp
