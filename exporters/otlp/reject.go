package otlp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A failed export is either a backend that is away or busy, which the
// stage waits out while the stream holds the data, or a batch the backend
// will never take, whose messages go to the DLQ so they do not hold the
// stream behind them forever. OTLP names which answers may be retried; of
// the others, only those about the data itself dead-letter: HTTP 400, 413
// and 422, gRPC InvalidArgument. Answers about the backend or how weft
// reaches it (401, 403, 404, 415; Unauthenticated, PermissionDenied,
// Unimplemented, …) would come back for every batch: dead-lettering the
// whole stream until someone fixes a token gains nothing, so they hold
// it, as an unreachable backend does.

// rejected returns why the backend refused a batch for good, and whether
// it did. code is the HTTP status of the failed request (0 for gRPC, or
// when no response came).
func rejected(err error, code int) (string, bool) {
	if err == nil {
		return "", false
	}
	if code != 0 {
		switch code {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			return fmt.Sprintf("backend rejected the batch: HTTP %d: %v", code, err), true
		}
		return "", false
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() == codes.InvalidArgument {
		return fmt.Sprintf("backend rejected the batch: gRPC %s: %s", codes.InvalidArgument, se.GRPCStatus().Message()), true
	}
	return "", false
}

// httpStatus receives the status code of an export's HTTP response (the
// SDK's HTTP exporters report a refused request as text only).
type httpStatus struct{ code atomic.Int32 }

type httpStatusKey struct{}

// withHTTPStatus returns a context for one export call whose HTTP
// response status lands in the returned httpStatus.
func withHTTPStatus(ctx context.Context) (context.Context, *httpStatus) {
	st := &httpStatus{}
	return context.WithValue(ctx, httpStatusKey{}, st), st
}

// statusTransport records each response's status in its request's
// httpStatus, if the request has one.
type statusTransport struct{ base http.RoundTripper }

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if resp != nil {
		if st, ok := req.Context().Value(httpStatusKey{}).(*httpStatus); ok {
			st.code.Store(int32(resp.StatusCode))
		}
	}
	return resp, err
}

// httpClient is the HTTP exporters' client: the SDK's defaults (proxy from
// the environment, conn's TLS and timeout) with statusTransport around it.
func httpClient(conn connection) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = conn.tls
	return &http.Client{Transport: statusTransport{base: base}, Timeout: conn.timeout}
}
