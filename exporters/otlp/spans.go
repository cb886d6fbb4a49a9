package otlp

import (
	"crypto/sha256"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// ScopeName is the instrumentation scope of everything the stage exports.
const ScopeName = "github.com/weftobs/weft/exporters/otlp"

var scope = instrumentation.Scope{Name: ScopeName, SchemaURL: semconv.SchemaURL}

// CallIDs are the trace and span ids of a call. They are derived from the
// call's id alone, so a call exported twice (a redelivery, a replay to a
// new backend) has the same ids both times.
type CallIDs struct {
	Trace          trace.TraceID
	Client, Server trace.SpanID
}

// IDsFor derives the ids of c: SHA-256 of its id, the first 16 bytes the
// trace id, the next 8 the client span's id, the last 8 the server's. A
// call without an id (a writer bug) is identified by its encoding.
//
// The id, not the halves (Call.halves), and on purpose: a TCP call's id is
// its first half, the client's whenever the client was seen, so a call a
// restarted correlator emits again from the client's side alone keeps its
// ids. Emitted again from the server's side alone it carries only the
// server's half, and no derivation from halves could give it the joined
// call's trace id without taking it from the client-side re-emission;
// that case is for a consumer to drop by halves, as the graph does.
func IDsFor(c *schema.Call) CallIDs {
	var sum [32]byte
	if id := c.GetId(); id != "" {
		sum = sha256.Sum256([]byte("weft.call/" + id))
	} else {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		sum = sha256.Sum256(append([]byte("weft.call.body/"), b...))
	}
	var ids CallIDs
	copy(ids.Trace[:], sum[0:16])
	copy(ids.Client[:], sum[16:24])
	copy(ids.Server[:], sum[24:32])
	// All-zero ids are invalid in OTLP; a hash hits one with probability
	// 2^-64, but then make it valid rather than dropped.
	if !ids.Trace.IsValid() {
		ids.Trace[15] = 1
	}
	if !ids.Client.IsValid() {
		ids.Client[7] = 1
	}
	if !ids.Server.IsValid() || ids.Server == ids.Client {
		ids.Server[7] ^= 2
	}
	return ids
}

// SpanMapper turns calls into spans. Safe for concurrent use.
type SpanMapper struct {
	res *resources
}

// NewSpanMapper returns a SpanMapper with its own resource cache.
func NewSpanMapper() *SpanMapper { return &SpanMapper{res: newResources(1 << 14)} }

// AppendSpans appends the spans of c to dst: a CLIENT span on the caller
// and a SERVER span, its child, on the callee. A call of which one side
// was not seen (the other end external or on an uninstrumented node) has
// only the span of the side that was; a failed connect has only the
// client's, since nothing accepted it.
//
// A connection reported while open (Call.state set) is one trace, with
// one span pair per emission, each covering its interval: OPEN from the
// connection's start to its open (the ids a whole call would have), then
// each PROGRESS and the CLOSE from the previous emission's end to its
// own, children of the OPEN's client span, with the bytes of that
// interval (weft.connection.bytes_sent/received) and
// weft.connection.state. A span is immutable once exported, so a long
// connection shows from its open on, and its traffic over time, without
// one span that would only be exported when it closes.
func (m *SpanMapper) AppendSpans(dst []sdktrace.ReadOnlySpan, c *schema.Call) []sdktrace.ReadOnlySpan {
	ids := IDsFor(c)
	state := c.GetState()
	var parent trace.SpanContext
	var stateAttr []attribute.KeyValue
	if state != schema.CallState_CALL_STATE_UNSPECIFIED {
		conn := IDsFor(&schema.Call{Id: schema.ConnectionID(c)})
		ids.Trace = conn.Trace
		if state != schema.CallState_CALL_STATE_OPEN {
			parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: conn.Trace, SpanID: conn.Client, TraceFlags: trace.FlagsSampled, Remote: true})
		}
		_, sent, received := schema.Counts(c)
		stateAttr = []attribute.KeyValue{
			attribute.String("weft.connection.state", connState(state)),
			attribute.Int64("weft.connection.bytes_sent", int64(sent)),
			attribute.Int64("weft.connection.bytes_received", int64(received)),
		}
	}
	client, server := clientSeen(c), serverSeen(c)
	if c.GetErrno() != 0 {
		server = false
	}
	if !client && !server {
		return dst
	}
	name := spanName(c)
	start, end := time.Unix(0, int64(c.GetStartUnixNano())), time.Unix(0, int64(c.GetEndUnixNano()))
	if since := c.GetSinceUnixNano(); state > schema.CallState_CALL_STATE_OPEN && since > c.GetStartUnixNano() {
		start = time.Unix(0, int64(since))
	}
	if end.Before(start) {
		end = start
	}
	status := sdktrace.Status{Code: codes.Unset}
	var errAttr []attribute.KeyValue
	if e := c.GetErrno(); e != 0 {
		status = sdktrace.Status{Code: codes.Error, Description: syscall.Errno(e).Error()}
		errAttr = []attribute.KeyValue{semconv.ErrorTypeKey.String(errnoName(e))}
	}
	clientSC := trace.NewSpanContext(trace.SpanContextConfig{TraceID: ids.Trace, SpanID: ids.Client, TraceFlags: trace.FlagsSampled})
	if client {
		dst = append(dst, tracetest.SpanStub{
			Name: name, SpanContext: clientSC, Parent: parent, SpanKind: trace.SpanKindClient,
			StartTime: start, EndTime: end, Status: status,
			Attributes:           append(append(clientAttributes(c), errAttr...), stateAttr...),
			Resource:             m.res.forEndpoint(c.GetClient()),
			InstrumentationScope: scope,
			ChildSpanCount:       boolInt(server),
		}.Snapshot())
	}
	if server {
		stub := tracetest.SpanStub{
			Name:        name,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: ids.Trace, SpanID: ids.Server, TraceFlags: trace.FlagsSampled}),
			SpanKind:    trace.SpanKindServer,
			StartTime:   start, EndTime: end, Status: status,
			Attributes:           append(serverAttributes(c), stateAttr...),
			Resource:             m.res.forEndpoint(c.GetServer()),
			InstrumentationScope: scope,
		}
		switch {
		case client:
			// The parent is the client span whether or not this export
			// carries it: a partial call's client may be exported by
			// another node's correlator.
			stub.Parent = clientSC.WithRemote(true)
		case parent.IsValid():
			stub.Parent = parent
		}
		dst = append(dst, stub.Snapshot())
	}
	return dst
}

// connState names a connection emission's state for the span attribute.
func connState(s schema.CallState) string {
	switch s {
	case schema.CallState_CALL_STATE_OPEN:
		return "open"
	case schema.CallState_CALL_STATE_PROGRESS:
		return "progress"
	case schema.CallState_CALL_STATE_CLOSE:
		return "close"
	}
	return "closed"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// clientSeen reports whether weft saw the client side of c.
func clientSeen(c *schema.Call) bool {
	ep := c.GetClient()
	return ep != nil && !ep.GetExternal() && (!c.GetPartial() || ep.GetTask() != nil)
}

// serverSeen reports whether weft saw the server side of c.
func serverSeen(c *schema.Call) bool {
	ep := c.GetServer()
	return ep != nil && !ep.GetExternal() && (!c.GetPartial() || ep.GetTask() != nil)
}

// spanName is low-cardinality: the transport and the server's service (its
// workload), with the port or socket path.
func spanName(c *schema.Call) string {
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		return "unix " + c.GetPath()
	}
	target := peerName(c.GetServer())
	port := c.GetPort()
	if port == 0 {
		port = c.GetServer().GetPort()
	}
	return "tcp " + target + ":" + strconv.FormatUint(uint64(port), 10)
}

// peerName names an endpoint for humans: its workload, pod, executable or
// address.
func peerName(ep *schema.Endpoint) string {
	pod := ep.GetPod()
	if w := schema.WorkloadOf(pod); w != nil {
		return w.GetName()
	}
	if pod.GetName() != "" {
		return pod.GetName()
	}
	if a, ok := addr(ep.GetAddress()); ok {
		return a.String()
	}
	return "unknown"
}

func addr(b []byte) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func transportAttrs(c *schema.Call) []attribute.KeyValue {
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		return []attribute.KeyValue{semconv.NetworkTransportUnix}
	}
	attrs := []attribute.KeyValue{semconv.NetworkTransportTCP}
	a, ok := addr(c.GetServer().GetAddress())
	if !ok {
		a, ok = addr(c.GetClient().GetAddress())
	}
	if ok && a.Is4() {
		attrs = append(attrs, semconv.NetworkTypeIPv4)
	} else if ok {
		attrs = append(attrs, semconv.NetworkTypeIPv6)
	}
	return attrs
}

// serverAddr is the server's address as the client named it: the Service
// VIP it dialed when there was one, else the server's own.
func serverAddr(c *schema.Call) (netip.Addr, uint32, bool) {
	if a, ok := addr(c.GetDialedAddress()); ok {
		return a, c.GetDialedPort(), true
	}
	a, ok := addr(c.GetServer().GetAddress())
	return a, serverPort(c), ok
}

func serverPort(c *schema.Call) uint32 {
	if p := c.GetServer().GetPort(); p != 0 {
		return p
	}
	return c.GetPort()
}

// clientAttributes follow the semantic conventions for a client span:
// the peer is the server socket, the local end the client's, and
// server.* what the client dialed.
func clientAttributes(c *schema.Call) []attribute.KeyValue {
	attrs := transportAttrs(c)
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		if p := c.GetPath(); p != "" {
			attrs = append(attrs, semconv.NetworkPeerAddress(p), semconv.ServerAddress(p))
		}
		return attrs
	}
	if a, ok := addr(c.GetServer().GetAddress()); ok {
		attrs = append(attrs, semconv.NetworkPeerAddress(a.String()), semconv.NetworkPeerPort(int(serverPort(c))))
	}
	if a, ok := addr(c.GetClient().GetAddress()); ok {
		attrs = append(attrs, semconv.NetworkLocalAddress(a.String()), semconv.NetworkLocalPort(int(c.GetClient().GetPort())))
	}
	if a, port, ok := serverAddr(c); ok {
		attrs = append(attrs, semconv.ServerAddress(a.String()), semconv.ServerPort(int(port)))
	}
	return attrs
}

// serverAttributes follow the semantic conventions for a server span: the
// peer is the client socket, the local end the server's; client.* is the
// caller and server.* the address it reached.
func serverAttributes(c *schema.Call) []attribute.KeyValue {
	attrs := transportAttrs(c)
	if c.GetTransport() == schema.Transport_TRANSPORT_UNIX {
		if p := c.GetPath(); p != "" {
			attrs = append(attrs, semconv.NetworkLocalAddress(p), semconv.ServerAddress(p))
		}
		return attrs
	}
	if a, ok := addr(c.GetClient().GetAddress()); ok {
		attrs = append(attrs,
			semconv.NetworkPeerAddress(a.String()), semconv.NetworkPeerPort(int(c.GetClient().GetPort())),
			semconv.ClientAddress(a.String()), semconv.ClientPort(int(c.GetClient().GetPort())))
	}
	if a, ok := addr(c.GetServer().GetAddress()); ok {
		attrs = append(attrs, semconv.NetworkLocalAddress(a.String()), semconv.NetworkLocalPort(int(serverPort(c))))
	}
	if a, port, ok := serverAddr(c); ok {
		attrs = append(attrs, semconv.ServerAddress(a.String()), semconv.ServerPort(int(port)))
	}
	return attrs
}

// errnoName is the symbolic name of a Linux errno (ECONNREFUSED), the
// error.type of a failed call.
func errnoName(e int32) string {
	if n := unix.ErrnoName(syscall.Errno(e)); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(int(e))
}
