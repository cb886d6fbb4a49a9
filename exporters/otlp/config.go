package otlp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Protocols the stage speaks, as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Config is an otlp stage's `config:`. Every connection setting left empty
// falls back to the standard OTEL_EXPORTER_OTLP_* variable (the
// signal-specific one first, e.g. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), then
// to the OpenTelemetry default; a value set here wins over the variable.
type Config struct {
	// Protocol is "grpc" or "http/protobuf" (OTEL_EXPORTER_OTLP_PROTOCOL;
	// default grpc).
	Protocol string `yaml:"protocol" json:"protocol"`
	// Endpoint is the backend's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT:
	// http(s)://host:port; for http/protobuf the signal path (/v1/traces…)
	// is appended. Default http://localhost:4317 (grpc) or :4318 (http).
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Insecure disables TLS for a gRPC endpoint given without a scheme
	// (OTEL_EXPORTER_OTLP_INSECURE). An http:// endpoint is always plain.
	Insecure bool `yaml:"insecure" json:"insecure"`
	// Headers are sent with every export (an auth token); they are merged
	// over OTEL_EXPORTER_OTLP_HEADERS.
	Headers map[string]string `yaml:"headers" json:"headers"`
	// TLS configures an https:// endpoint.
	TLS TLSConfig `yaml:"tls" json:"tls"`
	// Compression is "gzip" or "none" (OTEL_EXPORTER_OTLP_COMPRESSION;
	// default none).
	Compression string `yaml:"compression" json:"compression"`
	// Timeout bounds one export attempt (OTEL_EXPORTER_OTLP_TIMEOUT;
	// default 10s).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`

	// Traces, Logs and Metrics switch the signals; all default on.
	Traces  SignalConfig  `yaml:"traces" json:"traces"`
	Logs    SignalConfig  `yaml:"logs" json:"logs"`
	Metrics MetricsConfig `yaml:"metrics" json:"metrics"`

	// SelfTraces makes the stage trace its own work, a span per exported
	// batch, sent to the same backend through the SDK's batch processor.
	// Off by default.
	SelfTraces bool `yaml:"selfTraces" json:"selfTraces"`

	// Batch bounds what the stage holds before the backend accepts it.
	Batch BatchConfig `yaml:"batch" json:"batch"`
	// Retry is the backoff between export attempts while the backend
	// fails. The stage retries until it is shut down: the stream holds
	// what it cannot export, nothing is dropped.
	Retry RetryConfig `yaml:"retry" json:"retry"`
}

// TLSConfig is the TLS of the connection to the backend.
type TLSConfig struct {
	// CAFile is a PEM bundle to trust (OTEL_EXPORTER_OTLP_CERTIFICATE);
	// default the system roots.
	CAFile string `yaml:"caFile" json:"caFile"`
	// CertFile and KeyFile are a client certificate for mutual TLS
	// (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / _CLIENT_KEY).
	CertFile string `yaml:"certFile" json:"certFile"`
	KeyFile  string `yaml:"keyFile" json:"keyFile"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `yaml:"serverName" json:"serverName"`
}

// SignalConfig switches one signal.
type SignalConfig struct {
	// Enabled defaults to the standard OTEL_<SIGNAL>_EXPORTER variable
	// (OTEL_TRACES_EXPORTER…): "none" turns the signal off, "otlp" or
	// unset leaves it on. A value set here wins over the variable.
	Enabled *bool `yaml:"enabled" json:"enabled"`
}

// exporterEnv reads OTEL_<SIGNAL>_EXPORTER: whether it turns signal off,
// or an error for an exporter weft does not have (it speaks only OTLP).
// The variable is a comma-separated list; "none" alone means off.
func exporterEnv(signal string) (on bool, err error) {
	name := "OTEL_" + strings.ToUpper(signal) + "_EXPORTER"
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return true, nil
	}
	on = false
	for _, e := range strings.Split(v, ",") {
		switch e = strings.TrimSpace(e); e {
		case "otlp":
			on = true
		case "none", "":
		default:
			return false, fmt.Errorf("%s=%q: weft exports %s only over OTLP (%q) or not at all (%q)", name, v, signal, "otlp", "none")
		}
	}
	return on, nil
}

// signalOn reports whether signal is exported: the config's switch if
// set, else OTEL_<SIGNAL>_EXPORTER (Validate reports a bad value).
func (c Config) signalOn(signal string) bool {
	var sc SignalConfig
	switch signal {
	case signalTraces:
		sc = c.Traces
	case signalLogs:
		sc = c.Logs
	case signalMetrics:
		sc = c.Metrics.SignalConfig
	}
	if sc.Enabled != nil {
		return *sc.Enabled
	}
	on, err := exporterEnv(signal)
	return on && err == nil
}

// MetricsConfig configures the per-edge and pipeline-health metrics.
type MetricsConfig struct {
	SignalConfig `yaml:",inline" json:",inline"`
	// Interval is how often metrics are pushed (default 15s).
	Interval time.Duration `yaml:"interval" json:"interval"`
	// Level is the finest endpoint identity an edge carries: "workload"
	// (namespace + workload, the default) or "pod" (adds the pod name, far
	// more series).
	Level string `yaml:"level" json:"level"`
	// CardinalityLimit bounds the series of each metric; past it new
	// attribute sets are folded into one series marked
	// otel.metric.overflow=true. Default 2000.
	CardinalityLimit int `yaml:"cardinalityLimit" json:"cardinalityLimit"`
}

// Metric levels.
const (
	LevelWorkload = "workload"
	LevelPod      = "pod"
)

// BatchConfig bounds batching. Memory held is at most
// (Exporters + Queue + 1) batches of MaxItems items (plus one message's
// worth each); the stream holds everything beyond.
type BatchConfig struct {
	// MaxItems seals a batch at this many spans + log records. Default 2048.
	MaxItems int `yaml:"maxItems" json:"maxItems"`
	// Linger seals a non-empty batch this long after its first item.
	// Default 200ms.
	Linger time.Duration `yaml:"linger" json:"linger"`
	// Exporters is how many batches are exported concurrently. Default 2.
	Exporters int `yaml:"exporters" json:"exporters"`
	// Queue is how many sealed batches wait for an exporter. Default 2.
	Queue int `yaml:"queue" json:"queue"`
	// MaxAckPending bounds the stream messages delivered to the stage and
	// not yet acked. Default 1024.
	MaxAckPending int `yaml:"maxAckPending" json:"maxAckPending"`
	// AckWait is how long JetStream waits for an ack before redelivering.
	// The stage heartbeats what it holds every AckWait/3, so a slow or
	// failing backend does not cause redeliveries. Default 30s.
	AckWait time.Duration `yaml:"ackWait" json:"ackWait"`
}

// RetryConfig is the export backoff.
type RetryConfig struct {
	// Initial is the first delay (default 100ms); it doubles up to Max
	// (default 10s).
	Initial time.Duration `yaml:"initial" json:"initial"`
	Max     time.Duration `yaml:"max" json:"max"`
}

// DefaultConfig is the config of a stage that says nothing.
func DefaultConfig() Config {
	c := Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Metrics.Interval <= 0 {
		c.Metrics.Interval = 15 * time.Second
	}
	if c.Metrics.Level == "" {
		c.Metrics.Level = LevelWorkload
	}
	if c.Metrics.CardinalityLimit <= 0 {
		c.Metrics.CardinalityLimit = 2000
	}
	if c.Batch.MaxItems <= 0 {
		c.Batch.MaxItems = 2048
	}
	if c.Batch.Linger <= 0 {
		c.Batch.Linger = 200 * time.Millisecond
	}
	if c.Batch.Exporters <= 0 {
		c.Batch.Exporters = 2
	}
	if c.Batch.Queue <= 0 {
		c.Batch.Queue = 2
	}
	if c.Batch.MaxAckPending <= 0 {
		c.Batch.MaxAckPending = 1024
	}
	if c.Batch.AckWait <= 0 {
		c.Batch.AckWait = 30 * time.Second
	}
	if c.Retry.Initial <= 0 {
		c.Retry.Initial = 100 * time.Millisecond
	}
	if c.Retry.Max <= 0 {
		c.Retry.Max = 10 * time.Second
	}
}

// Validate reports every problem in c, the environment variables it falls
// back to included.
func (c *Config) Validate() error {
	var errs []error
	if p := c.Protocol; p != "" && p != ProtocolGRPC && p != ProtocolHTTPProtobuf {
		errs = append(errs, fmt.Errorf("protocol %q: want %q or %q", p, ProtocolGRPC, ProtocolHTTPProtobuf))
	}
	if x := c.Compression; x != "" && x != "gzip" && x != "none" {
		errs = append(errs, fmt.Errorf("compression %q: want gzip or none", x))
	}
	if l := c.Metrics.Level; l != "" && l != LevelWorkload && l != LevelPod {
		errs = append(errs, fmt.Errorf("metrics.level %q: want %q or %q", l, LevelWorkload, LevelPod))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls.certFile and tls.keyFile go together"))
	}
	if c.Batch.MaxAckPending > 0 && c.Batch.MaxItems < 0 {
		errs = append(errs, errors.New("batch.maxItems must be positive"))
	}
	for _, sig := range []string{signalTraces, signalLogs, signalMetrics} {
		if _, err := exporterEnv(sig); err != nil {
			errs = append(errs, err)
		}
		if _, err := c.resolve(sig); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Signals, as the OTEL_EXPORTER_OTLP_<SIGNAL>_* variables name them.
const (
	signalTraces  = "traces"
	signalLogs    = "logs"
	signalMetrics = "metrics"
)

// connection is where and how one signal is exported, resolved from the
// config and the environment.
type connection struct {
	protocol    string
	url         string // grpc: scheme://host:port; http: the full URL
	insecure    bool
	headers     map[string]string
	tls         *tls.Config // nil for a plain connection
	compression string
	timeout     time.Duration
}

// env returns OTEL_EXPORTER_OTLP_<SIGNAL>_<name>, or else
// OTEL_EXPORTER_OTLP_<name>, and whether the signal-specific one was set.
func env(signal, name string) (v string, specific bool) {
	if v := strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_" + strings.ToUpper(signal) + "_" + name)); v != "" {
		return v, true
	}
	return strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_" + name)), false
}

// resolve applies the config, then the environment, then the defaults.
func (c Config) resolve(signal string) (connection, error) {
	conn := connection{protocol: c.Protocol, compression: c.Compression, timeout: c.Timeout, insecure: c.Insecure}
	if conn.protocol == "" {
		conn.protocol, _ = env(signal, "PROTOCOL")
	}
	switch conn.protocol {
	case "":
		conn.protocol = ProtocolGRPC
	case ProtocolGRPC, ProtocolHTTPProtobuf:
	default:
		return conn, fmt.Errorf("%s protocol %q: want %q or %q", signal, conn.protocol, ProtocolGRPC, ProtocolHTTPProtobuf)
	}

	endpoint, specific := c.Endpoint, false
	if endpoint == "" {
		endpoint, specific = env(signal, "ENDPOINT")
	}
	if endpoint == "" {
		endpoint = "http://localhost:4317"
		if conn.protocol == ProtocolHTTPProtobuf {
			endpoint = "http://localhost:4318"
		}
	}
	if !conn.insecure {
		if v, _ := env(signal, "INSECURE"); v != "" {
			conn.insecure, _ = strconv.ParseBool(v)
		}
	}
	if !strings.Contains(endpoint, "://") {
		// host:port, as the gRPC exporters have always accepted.
		scheme := "https://"
		if conn.insecure {
			scheme = "http://"
		}
		endpoint = scheme + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return conn, fmt.Errorf("%s endpoint %q: want http(s)://host:port", signal, endpoint)
	}
	conn.insecure = u.Scheme == "http"
	if conn.protocol == ProtocolHTTPProtobuf && !specific {
		// The base endpoint names the server; each signal has its path.
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/" + signal
	}
	if conn.protocol == ProtocolGRPC {
		u.Path = ""
	}
	conn.url = u.String()

	conn.headers = map[string]string{}
	if v, _ := env(signal, "HEADERS"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				return conn, fmt.Errorf("%s headers: %q is not key=value", signal, kv)
			}
			k, _ = url.QueryUnescape(strings.TrimSpace(k))
			val, _ = url.QueryUnescape(strings.TrimSpace(val))
			conn.headers[k] = val
		}
	}
	for k, v := range c.Headers {
		conn.headers[k] = v
	}

	if conn.compression == "" {
		conn.compression, _ = env(signal, "COMPRESSION")
	}
	if conn.compression == "" {
		conn.compression = "none"
	}
	if conn.timeout <= 0 {
		if v, _ := env(signal, "TIMEOUT"); v != "" {
			ms, err := strconv.Atoi(v)
			if err != nil {
				return conn, fmt.Errorf("%s timeout %q: want milliseconds", signal, v)
			}
			conn.timeout = time.Duration(ms) * time.Millisecond
		}
	}
	if conn.timeout <= 0 {
		conn.timeout = 10 * time.Second
	}

	if !conn.insecure {
		conn.tls, err = c.tlsConfig(signal, u.Hostname())
		if err != nil {
			return conn, err
		}
	}
	return conn, nil
}

func (c Config) tlsConfig(signal, host string) (*tls.Config, error) {
	caFile, certFile, keyFile := c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile
	if caFile == "" {
		caFile, _ = env(signal, "CERTIFICATE")
	}
	if certFile == "" {
		certFile, _ = env(signal, "CLIENT_CERTIFICATE")
		keyFile, _ = env(signal, "CLIENT_KEY")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if c.TLS.ServerName != "" {
		cfg.ServerName = c.TLS.ServerName
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s tls ca: %w", signal, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s tls ca %s: no PEM certificate in it", signal, caFile)
		}
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s tls client certificate: %w", signal, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
