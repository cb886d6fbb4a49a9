package otlp

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// The SDK exporters' own retries are off: the stage retries a whole batch
// itself, holding its stream messages unacked, so it alone decides when
// data is given up (never: a batch the backend refuses for good goes to
// the DLQ, see reject.go) and memory stays bounded.

// reconnect bounds gRPC's reconnection backoff (120s by default) by the
// stage's retry maximum, so a backend that comes back is used again within
// one retry interval.
func reconnect(cfg Config) grpc.DialOption {
	cfg.setDefaults()
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: cfg.Retry.Initial, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.Retry.Max},
		MinConnectTimeout: 5 * time.Second,
	})
}

// NewTraceExporter returns the OTLP span exporter cfg describes. Its
// ExportSpans is synchronous: when it returns nil the backend accepted the
// spans.
func NewTraceExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	conn, err := cfg.resolve(signalTraces)
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if conn.protocol == ProtocolHTTPProtobuf {
		opts := []otlptracehttp.Option{
			otlptracehttp.WithEndpointURL(conn.url), otlptracehttp.WithHeaders(conn.headers),
			otlptracehttp.WithTimeout(conn.timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
			otlptracehttp.WithHTTPClient(httpClient(conn)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		if conn.tls != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(conn.tls))
		} else {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	} else {
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpointURL(conn.url), otlptracegrpc.WithHeaders(conn.headers),
			otlptracegrpc.WithTimeout(conn.timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
			otlptracegrpc.WithDialOption(reconnect(cfg)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
		}
		if conn.tls != nil {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(conn.tls)))
		} else {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter for %s: %w", conn.url, err)
	}
	return exp, nil
}

// NewLogExporter returns the OTLP log exporter cfg describes; its Export
// is synchronous.
func NewLogExporter(ctx context.Context, cfg Config) (sdklog.Exporter, error) {
	conn, err := cfg.resolve(signalLogs)
	if err != nil {
		return nil, err
	}
	var exp sdklog.Exporter
	if conn.protocol == ProtocolHTTPProtobuf {
		opts := []otlploghttp.Option{
			otlploghttp.WithEndpointURL(conn.url), otlploghttp.WithHeaders(conn.headers),
			otlploghttp.WithTimeout(conn.timeout), otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}),
			otlploghttp.WithHTTPClient(httpClient(conn)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
		}
		if conn.tls != nil {
			opts = append(opts, otlploghttp.WithTLSClientConfig(conn.tls))
		} else {
			opts = append(opts, otlploghttp.WithInsecure())
		}
		exp, err = otlploghttp.New(ctx, opts...)
	} else {
		opts := []otlploggrpc.Option{
			otlploggrpc.WithEndpointURL(conn.url), otlploggrpc.WithHeaders(conn.headers),
			otlploggrpc.WithTimeout(conn.timeout), otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
			otlploggrpc.WithDialOption(reconnect(cfg)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlploggrpc.WithCompressor("gzip"))
		}
		if conn.tls != nil {
			opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(conn.tls)))
		} else {
			opts = append(opts, otlploggrpc.WithInsecure())
		}
		exp, err = otlploggrpc.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp log exporter for %s: %w", conn.url, err)
	}
	return exp, nil
}

// NewMetricExporter returns the OTLP metric exporter cfg describes. Its
// temporality is cumulative, so an export that fails loses nothing: the
// next one carries the totals.
func NewMetricExporter(ctx context.Context, cfg Config) (sdkmetric.Exporter, error) {
	conn, err := cfg.resolve(signalMetrics)
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if conn.protocol == ProtocolHTTPProtobuf {
		opts := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpointURL(conn.url), otlpmetrichttp.WithHeaders(conn.headers),
			otlpmetrichttp.WithTimeout(conn.timeout), otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}),
			otlpmetrichttp.WithHTTPClient(httpClient(conn)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
		}
		if conn.tls != nil {
			opts = append(opts, otlpmetrichttp.WithTLSClientConfig(conn.tls))
		} else {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	} else {
		opts := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithEndpointURL(conn.url), otlpmetricgrpc.WithHeaders(conn.headers),
			otlpmetricgrpc.WithTimeout(conn.timeout), otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
			otlpmetricgrpc.WithDialOption(reconnect(cfg)),
		}
		if conn.compression == "gzip" {
			opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
		}
		if conn.tls != nil {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(conn.tls)))
		} else {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		}
		exp, err = otlpmetricgrpc.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp metric exporter for %s: %w", conn.url, err)
	}
	return exp, nil
}

// SelfMetricsReader returns a reader that pushes a MeterProvider's metrics
// to the OTLP backend cfg describes every cfg.Metrics.Interval. The runner
// adds it to the MeterProvider that serves weft's own counters on
// /metrics, so the same counters are also pushed over OTLP. Shutting the
// MeterProvider down flushes and closes it. With metrics off (the
// config, or OTEL_METRICS_EXPORTER=none) it returns nil and no error. A
// backend without a metrics service is said once on log.
func SelfMetricsReader(ctx context.Context, cfg Config, log *slog.Logger) (sdkmetric.Reader, error) {
	cfg.setDefaults()
	if _, err := exporterEnv(signalMetrics); err != nil {
		return nil, err
	}
	if !cfg.signalOn(signalMetrics) {
		return nil, nil
	}
	exp, err := NewMetricExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	gated := gatedMetricExporter{Exporter: exp, gate: newSignalGate(signalMetrics, cfg, log)}
	return sdkmetric.NewPeriodicReader(gated, sdkmetric.WithInterval(cfg.Metrics.Interval)), nil
}
