// Package otlprecv is a real OTLP receiver that runs inside a test process:
// the OTLP/gRPC collector services (traces, metrics, logs) and OTLP/HTTP
// with protobuf bodies (POST /v1/traces, /v1/metrics, /v1/logs), speaking
// the wire protocol any OpenTelemetry exporter speaks. It records what
// arrives so a test can compare it with its ground truth.
//
// It can require TLS (NewTestCA makes a CA and server certificate), require
// a header (an auth token), and be switched to failing or slow, to test
// exporters against a backend that is down or behind.
//
// It is for tests and `weft up --demo` only; nothing else imports it.
package otlprecv
