package otlp

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A backend may take some signals and not others: Jaeger takes traces and
// answers Unimplemented for MetricsService (404 for /v1/metrics over
// HTTP). Such an answer comes back for every export, so it is said once,
// with the variable that turns the signal off, and the signal stops being
// sent instead of failing every batch or every push:
//   - metrics keep being offered quietly at each push (they are
//     cumulative, so a backend that gains the service later gets the
//     totals) and a backend that takes them again is said once too;
//   - spans and log records stop for the rest of the run: holding the
//     stream for a signal the backend will never take would hold the
//     other signals behind it. The stream still holds their messages for
//     its retention, for `weft replay --to` another backend.

// unsupported reports whether err is the backend saying it has no service
// for the signal: gRPC Unimplemented, or HTTP 404 (code is the HTTP status
// of the failed request, 0 for gRPC).
func unsupported(err error, code int) bool {
	if err == nil {
		return false
	}
	if code != 0 {
		return code == http.StatusNotFound
	}
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == codes.Unimplemented
}

// signalGate remembers that the backend lacks a signal. Safe for
// concurrent use.
type signalGate struct {
	signal, url string
	log         *slog.Logger
	off         atomic.Bool
}

func newSignalGate(signal string, cfg Config, log *slog.Logger) *signalGate {
	conn, _ := cfg.resolve(signal)
	return &signalGate{signal: signal, url: conn.url, log: log}
}

// lacks records that the backend refused the signal as unsupported; the
// first time, it says so.
func (g *signalGate) lacks(err error) {
	if !g.off.Swap(true) {
		g.log.Warn("the OTLP backend has no service for "+g.signal+"; weft stops sending them (set OTEL_"+envSignal(g.signal)+"_EXPORTER=none to say so)",
			"signal", g.signal, "endpoint", g.url, "err", err)
	}
}

// works records that the backend took the signal.
func (g *signalGate) works() {
	if g.off.Swap(false) {
		g.log.Info("the OTLP backend takes "+g.signal+" again", "signal", g.signal, "endpoint", g.url)
	}
}

func envSignal(signal string) string {
	switch signal {
	case signalTraces:
		return "TRACES"
	case signalLogs:
		return "LOGS"
	}
	return "METRICS"
}

// gatedMetricExporter is a metric exporter that reports a backend without
// a metrics service once, through its gate, instead of an error at every
// push (which the periodic reader would hand to the global error handler).
type gatedMetricExporter struct {
	sdkmetric.Exporter
	gate *signalGate
}

func (e gatedMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	ctx, st := withHTTPStatus(ctx)
	err := e.Exporter.Export(ctx, rm)
	switch {
	case err == nil:
		e.gate.works()
	case unsupported(err, int(st.code.Load())):
		e.gate.lacks(err)
		return nil
	}
	return err
}
