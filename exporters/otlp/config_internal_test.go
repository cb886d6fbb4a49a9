package otlp

import (
	"strings"
	"testing"
	"time"
)

func TestConfigResolve(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		cfg      Config
		signal   string
		protocol string
		url      string
		tls      bool
		headers  map[string]string
		timeout  time.Duration
		err      string
	}{
		{name: "defaults", signal: signalTraces, protocol: ProtocolGRPC, url: "http://localhost:4317", timeout: 10 * time.Second},
		{name: "http default", cfg: Config{Protocol: ProtocolHTTPProtobuf}, signal: signalLogs, protocol: ProtocolHTTPProtobuf, url: "http://localhost:4318/v1/logs"},
		{
			name:   "env base endpoint gets the signal path",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			signal: signalMetrics, protocol: ProtocolHTTPProtobuf, url: "https://collector:4318/v1/metrics", tls: true,
		},
		{
			name:   "signal endpoint is used as is",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/otlp/traces", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
			signal: signalTraces, protocol: ProtocolHTTPProtobuf, url: "http://tempo:4318/otlp/traces",
		},
		{
			name:   "config wins over env",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			cfg:    Config{Endpoint: "http://cfg:4317", Protocol: ProtocolGRPC},
			signal: signalTraces, protocol: ProtocolGRPC, url: "http://cfg:4317",
		},
		{
			name:   "headers merge, config wins",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%20def,tenant=a"},
			cfg:    Config{Headers: map[string]string{"tenant": "b"}},
			signal: signalTraces, protocol: ProtocolGRPC, url: "http://localhost:4317",
			headers: map[string]string{"api-key": "abc def", "tenant": "b"},
		},
		{
			name:   "grpc host:port with insecure",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"},
			signal: signalTraces, protocol: ProtocolGRPC, url: "http://collector:4317", timeout: 2500 * time.Millisecond,
		},
		{
			name:   "grpc host:port is TLS by default",
			cfg:    Config{Endpoint: "collector:4317"},
			signal: signalTraces, protocol: ProtocolGRPC, url: "https://collector:4317", tls: true,
		},
		{name: "bad protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, signal: signalTraces, err: "protocol"},
		{name: "bad endpoint", cfg: Config{Endpoint: "ftp://x"}, signal: signalTraces, err: "endpoint"},
		{name: "missing CA", cfg: Config{Endpoint: "https://x:1", TLS: TLSConfig{CAFile: "/nonexistent.pem"}}, signal: signalTraces, err: "tls ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"ENDPOINT", "PROTOCOL", "HEADERS", "INSECURE", "TIMEOUT", "CERTIFICATE", "COMPRESSION", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
				t.Setenv("OTEL_EXPORTER_OTLP_"+k, "")
				for _, sig := range []string{"TRACES", "LOGS", "METRICS"} {
					t.Setenv("OTEL_EXPORTER_OTLP_"+sig+"_"+k, "")
				}
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			conn, err := tc.cfg.resolve(tc.signal)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one about %q", err, tc.err)
				}
				cfg := tc.cfg
				if verr := cfg.Validate(); verr == nil {
					t.Errorf("Validate passed a config resolve rejects")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conn.protocol != tc.protocol || conn.url != tc.url || (conn.tls != nil) != tc.tls {
				t.Errorf("got %s %s tls=%v, want %s %s tls=%v", conn.protocol, conn.url, conn.tls != nil, tc.protocol, tc.url, tc.tls)
			}
			for k, v := range tc.headers {
				if conn.headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, conn.headers[k], v)
				}
			}
			if tc.timeout != 0 && conn.timeout != tc.timeout {
				t.Errorf("timeout %v, want %v", conn.timeout, tc.timeout)
			}
		})
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	c := Config{Protocol: "udp", Compression: "zstd", Metrics: MetricsConfig{Level: "node"}, TLS: TLSConfig{CertFile: "x"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"protocol", "compression", "metrics.level", "tls.certFile"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
