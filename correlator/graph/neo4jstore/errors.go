package neo4jstore

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"
)

// Neo4j status codes the store explains.
const (
	codeUnauthorized     = "Neo.ClientError.Security.Unauthorized"
	codeAuthRateLimit    = "Neo.ClientError.Security.AuthenticationRateLimit"
	codeDatabaseNotFound = "Neo.ClientError.Database.DatabaseNotFound"
	codeConstraint       = "Neo.ClientError.Schema.ConstraintValidationFailed"
	codeReadOnly         = "Neo.ClientError.General.WriteOnReadOnlyAccessDatabase"
	codeNotLeader        = "Neo.ClientError.Cluster.NotALeader"
)

// Error is a failure to reach or write the store, in one line that names
// the URI, the statement where there is one, and the reason.
type Error struct {
	URI string
	// Op is what the store was doing ("read migration history"), and
	// Statement the statement's name, if one failed.
	Op, Statement string
	// Reason is what went wrong, for a person.
	Reason string
	// Unavailable is true when the cause is outside the stream's data:
	// nothing answering, credentials refused, no such database. Trying
	// again once that is fixed succeeds.
	Unavailable bool
	Err         error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "neo4j %s: ", e.URI)
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	if e.Statement != "" {
		fmt.Fprintf(&b, "statement %q: ", e.Statement)
	}
	b.WriteString(e.Reason)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsUnavailable reports whether err says the store cannot be reached or
// used as configured (see Error.Unavailable).
func IsUnavailable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Unavailable
}

// stmtError marks err as the failure of the statement named name.
type stmtError struct {
	name string
	err  error
}

func (e *stmtError) Error() string { return e.name + ": " + e.err.Error() }
func (e *stmtError) Unwrap() error { return e.err }

// describe turns an error of the driver into an *Error for op.
func (s *Store) describe(op string, err error) error {
	return describe(s.cfg, op, err)
}

func describe(cfg Config, op string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{URI: cfg.URI, Op: op, Err: err}
	var se *stmtError
	if errors.As(err, &se) {
		e.Statement = se.name
	}
	cause := driverCause(err)
	var ne *neo4j.Neo4jError
	var ce *neo4j.ConnectivityError
	switch {
	case errors.As(cause, &ne) && ne.Code == codeUnauthorized:
		e.Reason = fmt.Sprintf("authentication failed for user %s (check WEFT_NEO4J_USER and WEFT_NEO4J_PASSWORD)", cfg.User)
		e.Unavailable = true
	case errors.As(cause, &ne) && ne.Code == codeAuthRateLimit:
		e.Reason = fmt.Sprintf("authentication failed for user %s too many times, refused for a while (check WEFT_NEO4J_USER and WEFT_NEO4J_PASSWORD)", cfg.User)
		e.Unavailable = true
	case errors.As(cause, &ne) && ne.Code == codeDatabaseNotFound:
		e.Reason = fmt.Sprintf("database %q does not exist (check the stage's neo4j.database)", cfg.Database)
		e.Unavailable = true
	case errors.As(cause, &ne) && (ne.Code == codeReadOnly || ne.Code == codeNotLeader):
		e.Reason = fmt.Sprintf("database %q is read-only on this server, which refuses writes (a read replica or a secondary: point weft at a writer, with a neo4j:// routing URI for a cluster) (%s)", cfg.Database, ne.Code)
	case errors.As(cause, &ne) && ne.Code == codeConstraint:
		e.Reason = "constraint violated: " + oneLine(ne.Msg) + " (" + ne.Code + ")"
	case errors.As(cause, &ne):
		e.Reason = oneLine(ne.Msg) + " (" + ne.Code + ")"
		e.Unavailable = strings.HasPrefix(ne.Code, "Neo.TransientError.")
	case errors.As(cause, &ce):
		e.Reason = "cannot connect: " + oneLine(connectReason(ce))
		e.Unavailable = true
	default:
		e.Reason = oneLine(err.Error())
		var op *net.OpError
		e.Unavailable = errors.As(err, &op)
	}
	return e
}

// driverCause digs through the driver's wrappers, which do not all
// unwrap: a managed transaction's retries end in a
// TransactionExecutionLimit holding each attempt's error.
func driverCause(err error) error {
	for range 8 {
		var lim *neo4j.TransactionExecutionLimit
		if !errors.As(err, &lim) || len(lim.Errors) == 0 {
			return err
		}
		err = lim.Errors[len(lim.Errors)-1]
	}
	return err
}

// connectReason is why a connection failed, without the driver's
// prefixes: "dial tcp 127.0.0.1:1: connect: connection refused".
func connectReason(ce *neo4j.ConnectivityError) string {
	inner := ce.Inner
	for range 8 {
		var next *neo4j.ConnectivityError
		if inner == nil || !errors.As(inner, &next) {
			break
		}
		inner = next.Inner
	}
	if inner == nil {
		return ce.Error()
	}
	var op *net.OpError
	if errors.As(inner, &op) {
		return op.Error()
	}
	return inner.Error()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
