package otlprecv

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed exports
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Option configures a Receiver.
type Option func(*Receiver)

// WithTLS makes both listeners serve TLS with cfg (see CA.ServerTLS).
func WithTLS(cfg *tls.Config) Option { return func(r *Receiver) { r.tls = cfg } }

// WithRequiredHeader makes the receiver reject every export that does not
// carry header key with value (gRPC: Unauthenticated; HTTP: 401).
func WithRequiredHeader(key, value string) Option {
	return func(r *Receiver) { r.hdrKey, r.hdrValue = key, value }
}

// WithCountOnly makes the receiver count what arrives without keeping it,
// for benchmarks. Trace exports over gRPC are then counted by walking the
// wire format rather than decoded, so the receiver's own cost does not
// dominate a benchmark of an exporter in the same process.
func WithCountOnly() Option { return func(r *Receiver) { r.countOnly = true } }

// Signals, as WithoutSignal takes them.
const (
	SignalTraces  = "traces"
	SignalMetrics = "metrics"
	SignalLogs    = "logs"
)

// WithoutSignal makes the receiver lack a signal's service, as a
// traces-only backend (Jaeger) lacks metrics: gRPC answers Unimplemented
// (the service is not registered) and HTTP 404 (no route), and each such
// answer is counted (Unsupported).
func WithoutSignal(signal string) Option {
	return func(r *Receiver) {
		if r.without == nil {
			r.without = map[string]bool{}
		}
		r.without[signal] = true
	}
}

// Receiver is an in-process OTLP server. Its methods are safe for
// concurrent use.
type Receiver struct {
	tls       *tls.Config
	hdrKey    string
	hdrValue  string
	countOnly bool
	without   map[string]bool

	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	grpcLn   net.Listener
	httpLn   net.Listener
	grpcAddr string
	httpAddr string
	failing  atomic.Bool
	delay    atomic.Int64
	rejected atomic.Uint64
	failed   atomic.Uint64
	invalid  atomic.Uint64
	unsupp   atomic.Uint64
	refuse   atomic.Pointer[func(*tracepb.Span) bool]

	spanCount   atomic.Uint64
	logCount    atomic.Uint64
	metricCount atomic.Uint64

	mu      sync.Mutex
	traces  []*coltrace.ExportTraceServiceRequest
	logs    []*collogs.ExportLogsServiceRequest
	metrics []*colmetrics.ExportMetricsServiceRequest
	arrived []time.Time // when each span arrived, in order of Spans()
}

// Start starts a receiver on two free loopback ports and stops it in
// t.Cleanup.
func Start(t testing.TB, opts ...Option) *Receiver {
	t.Helper()
	r, err := New(opts...)
	if err != nil {
		t.Fatalf("start otlp receiver: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// New starts a receiver on two free loopback ports; the caller stops it.
func New(opts ...Option) (*Receiver, error) {
	r := &Receiver{}
	for _, o := range opts {
		o(r)
	}
	var err error
	if r.grpcLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("listen grpc: %w", err)
	}
	if r.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		r.grpcLn.Close()
		return nil, fmt.Errorf("listen http: %w", err)
	}
	r.grpcAddr, r.httpAddr = r.grpcLn.Addr().String(), r.httpLn.Addr().String()
	r.serve()
	return r, nil
}

// serve starts both servers on the current listeners.
func (r *Receiver) serve() {
	var gopts []grpc.ServerOption
	if r.tls != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(r.tls)))
	}
	if r.countOnly {
		gopts = append(gopts, grpc.ForceServerCodecV2(countCodec{proto: encoding.GetCodecV2("proto")}))
	}
	// grpc-go answers a call to a service that is not registered with
	// Unimplemented; this handler answers the same, counting it.
	gopts = append(gopts, grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		r.unsupp.Add(1)
		method, _ := grpc.MethodFromServerStream(stream)
		return status.Errorf(codes.Unimplemented, "unknown service %s", strings.TrimPrefix(path.Dir(method), "/"))
	}))
	r.grpcSrv = grpc.NewServer(gopts...)
	if !r.without[SignalTraces] {
		coltrace.RegisterTraceServiceServer(r.grpcSrv, traceService{r: r})
	}
	if !r.without[SignalMetrics] {
		colmetrics.RegisterMetricsServiceServer(r.grpcSrv, metricsService{r: r})
	}
	if !r.without[SignalLogs] {
		collogs.RegisterLogsServiceServer(r.grpcSrv, logsService{r: r})
	}
	grpcSrv, grpcLn := r.grpcSrv, r.grpcLn
	go func() { _ = grpcSrv.Serve(grpcLn) }()

	mux := http.NewServeMux()
	handle := func(signal string, h http.HandlerFunc) {
		if r.without[signal] {
			h = func(w http.ResponseWriter, req *http.Request) {
				r.unsupp.Add(1)
				http.NotFound(w, req)
			}
		}
		mux.HandleFunc("POST /v1/"+signal, h)
	}
	handle(SignalTraces, r.httpHandler(func() proto.Message { return &coltrace.ExportTraceServiceRequest{} },
		func(m proto.Message) (proto.Message, error) {
			if err := r.checkTraces(m.(*coltrace.ExportTraceServiceRequest)); err != nil {
				return nil, err
			}
			r.addTraces(m.(*coltrace.ExportTraceServiceRequest))
			return &coltrace.ExportTraceServiceResponse{}, nil
		}))
	handle(SignalMetrics, r.httpHandler(func() proto.Message { return &colmetrics.ExportMetricsServiceRequest{} },
		func(m proto.Message) (proto.Message, error) {
			r.addMetrics(m.(*colmetrics.ExportMetricsServiceRequest))
			return &colmetrics.ExportMetricsServiceResponse{}, nil
		}))
	handle(SignalLogs, r.httpHandler(func() proto.Message { return &collogs.ExportLogsServiceRequest{} },
		func(m proto.Message) (proto.Message, error) {
			r.addLogs(m.(*collogs.ExportLogsServiceRequest))
			return &collogs.ExportLogsServiceResponse{}, nil
		}))
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: r.tls}
	httpSrv, httpLn := r.httpSrv, r.httpLn
	go func() {
		if r.tls != nil {
			_ = httpSrv.ServeTLS(httpLn, "", "")
			return
		}
		_ = httpSrv.Serve(httpLn)
	}()
}

// Down stops both servers and closes their ports, as a backend that went
// away: exporters get connection refused. Up brings it back on the same
// ports.
func (r *Receiver) Down() { r.Stop() }

// Up restarts the servers after Down, on the same ports.
func (r *Receiver) Up() error {
	var err error
	if r.grpcLn, err = net.Listen("tcp", r.grpcAddr); err != nil {
		return fmt.Errorf("listen grpc again: %w", err)
	}
	if r.httpLn, err = net.Listen("tcp", r.httpAddr); err != nil {
		r.grpcLn.Close()
		return fmt.Errorf("listen http again: %w", err)
	}
	r.serve()
	return nil
}

// Stop stops both servers. It is idempotent. Down and Up must not race
// with Stop.
func (r *Receiver) Stop() {
	r.grpcSrv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.httpSrv.Shutdown(ctx)
}

func (r *Receiver) scheme() string {
	if r.tls != nil {
		return "https://"
	}
	return "http://"
}

// GRPCEndpoint is the gRPC endpoint as OTEL_EXPORTER_OTLP_ENDPOINT takes
// it: http://127.0.0.1:PORT (https:// with TLS).
func (r *Receiver) GRPCEndpoint() string { return r.scheme() + r.grpcAddr }

// HTTPEndpoint is the OTLP/HTTP base URL, to which exporters append
// /v1/traces etc.
func (r *Receiver) HTTPEndpoint() string { return r.scheme() + r.httpAddr }

// SetFailing makes every export fail as a backend that is down would
// (gRPC Unavailable, HTTP 503) until called with false.
func (r *Receiver) SetFailing(failing bool) { r.failing.Store(failing) }

// SetDelay makes every export wait d before it is answered: a slow backend.
func (r *Receiver) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetRejectSpans makes the receiver refuse, as invalid, every trace export
// holding a span f says yes to (gRPC InvalidArgument, HTTP 400: a batch
// the backend will never take, unlike a failing one); nil accepts all.
func (r *Receiver) SetRejectSpans(f func(*tracepb.Span) bool) {
	if f == nil {
		r.refuse.Store(nil)
		return
	}
	r.refuse.Store(&f)
}

// Invalid is how many exports were refused by SetRejectSpans.
func (r *Receiver) Invalid() uint64 { return r.invalid.Load() }

// errInvalid refuses a trace export with a span SetRejectSpans picked.
var errInvalid = errors.New("invalid span in request")

func (r *Receiver) checkTraces(req *coltrace.ExportTraceServiceRequest) error {
	f := r.refuse.Load()
	if f == nil {
		return nil
	}
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if (*f)(sp) {
					r.invalid.Add(1)
					return errInvalid
				}
			}
		}
	}
	return nil
}

// Unsupported is how many exports asked for a signal the receiver lacks
// (WithoutSignal).
func (r *Receiver) Unsupported() uint64 { return r.unsupp.Load() }

// Failed is how many exports were refused because the receiver was failing.
func (r *Receiver) Failed() uint64 { return r.failed.Load() }

// Rejected is how many exports were refused for a missing or wrong header.
func (r *Receiver) Rejected() uint64 { return r.rejected.Load() }

// SpanCount, LogCount and MetricPointCount count what was accepted.
func (r *Receiver) SpanCount() uint64        { return r.spanCount.Load() }
func (r *Receiver) LogCount() uint64         { return r.logCount.Load() }
func (r *Receiver) MetricPointCount() uint64 { return r.metricCount.Load() }

var (
	errDown   = errors.New("receiver is switched to failing")
	errNoAuth = errors.New("missing or wrong required header")
)

// admit applies the failing switch, the delay and the header check.
func (r *Receiver) admit(ctx context.Context, header func(string) string) error {
	if d := time.Duration(r.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.failing.Load() {
		r.failed.Add(1)
		return errDown
	}
	if r.hdrKey != "" && header(r.hdrKey) != r.hdrValue {
		r.rejected.Add(1)
		return errNoAuth
	}
	return nil
}

func (r *Receiver) admitGRPC(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	err := r.admit(ctx, func(k string) string {
		if v := md.Get(strings.ToLower(k)); len(v) > 0 {
			return v[0]
		}
		return ""
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errDown):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, errNoAuth):
		return status.Error(codes.Unauthenticated, err.Error())
	default:
		return status.FromContextError(err).Err()
	}
}

func (r *Receiver) httpHandler(newReq func() proto.Message, accept func(proto.Message) (proto.Message, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		switch err := r.admit(req.Context(), req.Header.Get); {
		case errors.Is(err, errDown):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		case errors.Is(err, errNoAuth):
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			http.Error(w, "unsupported content type "+ct, http.StatusUnsupportedMediaType)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			defer zr.Close()
			body = zr
		}
		data, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m := newReq()
		if err := proto.Unmarshal(data, m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := accept(m)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := proto.Marshal(resp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}
}

func (r *Receiver) addTraces(req *coltrace.ExportTraceServiceRequest) {
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	if !r.countOnly {
		now := time.Now()
		r.mu.Lock()
		r.traces = append(r.traces, req)
		for range n {
			r.arrived = append(r.arrived, now)
		}
		r.mu.Unlock()
	}
	r.spanCount.Add(uint64(n))
}

func (r *Receiver) addLogs(req *collogs.ExportLogsServiceRequest) {
	n := 0
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			n += len(sl.GetLogRecords())
		}
	}
	if !r.countOnly {
		r.mu.Lock()
		r.logs = append(r.logs, req)
		r.mu.Unlock()
	}
	r.logCount.Add(uint64(n))
}

func (r *Receiver) addMetrics(req *colmetrics.ExportMetricsServiceRequest) {
	n := 0
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				n += dataPoints(m)
			}
		}
	}
	if !r.countOnly {
		r.mu.Lock()
		r.metrics = append(r.metrics, req)
		r.mu.Unlock()
	}
	r.metricCount.Add(uint64(n))
}

type traceService struct {
	coltrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(ctx context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	if err := s.r.admitGRPC(ctx); err != nil {
		return nil, err
	}
	if err := s.r.checkTraces(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.r.addTraces(req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

type metricsService struct {
	colmetrics.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s metricsService) Export(ctx context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	if err := s.r.admitGRPC(ctx); err != nil {
		return nil, err
	}
	s.r.addMetrics(req)
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

type logsService struct {
	collogs.UnimplementedLogsServiceServer
	r *Receiver
}

func (s logsService) Export(ctx context.Context, req *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	if err := s.r.admitGRPC(ctx); err != nil {
		return nil, err
	}
	s.r.addLogs(req)
	return &collogs.ExportLogsServiceResponse{}, nil
}
