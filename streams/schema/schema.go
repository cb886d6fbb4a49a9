// Package schema is the versioned binary schema of weft's streams: the
// protobuf messages (generated code in schema.pb.go, source in proto/), the
// subjects they travel on, and the headers every message carries.
//
// It owns the wire format and nothing else: it must not import NATS or any
// stage kind. Old messages must always decode (see schema_test.go).
package schema

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

//go:generate sh -c "protoc --proto_path=proto --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=module=github.com/weftobs/weft/streams/schema proto/weft/schema/v1/schema.proto"

// Version is the schema version this build writes. Readers accept every
// version from 1 up to Version; the protobuf encoding is only ever extended.
const Version = 1

// Stream names and subject prefixes of DESIGN.md.
const (
	StreamEvents = "EVENTS"
	StreamCalls  = "CALLS"
	StreamDLQ    = "DLQ"

	EventsPrefix = "weft.events."
	CallsPrefix  = "weft.calls."
	DLQPrefix    = "weft.dlq."
)

// Event kinds: the last token of an EVENTS subject.
const (
	KindProcess = "process"
	KindTCP     = "tcp"
	KindUnix    = "unix"
	KindPod     = "pod"
)

// Headers every weft message carries.
const (
	// HeaderType names the protobuf message in the body, e.g.
	// "weft.schema.v1.EventBatch".
	HeaderType = "Weft-Type"
	// HeaderItems is the number of events or calls in the batch, so a
	// consumer can count without decoding.
	HeaderItems = "Weft-Items"

	// DLQ headers: why a message was dead-lettered and where it came from.
	HeaderDLQReason  = "Weft-Dlq-Reason"
	HeaderDLQStage   = "Weft-Dlq-Stage"
	HeaderDLQStream  = "Weft-Dlq-Stream"
	HeaderDLQSubject = "Weft-Dlq-Subject"
	HeaderDLQSeq     = "Weft-Dlq-Seq"
	// HeaderDLQFirstSeq is the DLQ sequence a dead letter was first stored
	// at; a letter redriven and dead-lettered again keeps it, so every
	// redrive of it publishes under the same Nats-Msg-Id.
	HeaderDLQFirstSeq = "Weft-Dlq-First-Seq"
)

// BatchItemsField is the field number of the repeated items (events, calls)
// in every batch message. The publisher appends items to a batch body
// without building the batch message, so every batch type keeps its items
// at this number and its version at 1 and origin at 2.
const BatchItemsField = 3

// PodsEndedField and PodsChangedField are the field numbers of
// CallBatch.pods_ended and pods_changed: the other kinds of item a CALLS
// message holds.
const (
	PodsEndedField   = 4
	PodsChangedField = 5
)

// ItemField is the field number item goes at in a batch: PodsEndedField
// for a *PodEnded, PodsChangedField for a *PodChanged, BatchItemsField for
// any other item (an event, a call).
func ItemField(item proto.Message) protowire.Number {
	switch item.(type) {
	case *PodEnded:
		return PodsEndedField
	case *PodChanged:
		return PodsChangedField
	}
	return BatchItemsField
}

// Token makes s safe as one NATS subject token: node names may contain dots
// (ip-10-0-0-1.ec2.internal), which would split the token. Dots, spaces and
// wildcards become underscores; an empty name becomes "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', ' ', '\t', '\r', '\n', '*', '>':
			return '_'
		}
		return r
	}, s)
}

// EventSubject is the subject of kind events from node:
// weft.events.<node>.<kind>.
func EventSubject(node, kind string) string { return EventsPrefix + Token(node) + "." + Token(kind) }

// CallSubject is the subject of calls correlated on node: weft.calls.<node>.
func CallSubject(node string) string { return CallsPrefix + Token(node) }

// DLQSubject is the dead-letter subject of stage: weft.dlq.<stage>.
func DLQSubject(stage string) string { return DLQPrefix + Token(stage) }

// ErrVersion is returned for a batch written by a newer, incompatible
// schema, or with no version at all.
var ErrVersion = errors.New("unsupported schema version")

// DecodeEventBatch decodes an EVENTS message body.
func DecodeEventBatch(data []byte) (*EventBatch, error) {
	b := &EventBatch{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("decode event batch: %w", err)
	}
	if err := checkVersion(b.GetSchemaVersion()); err != nil {
		return nil, fmt.Errorf("decode event batch: %w", err)
	}
	for i, ev := range b.GetEvents() {
		if ev.GetBody() == nil {
			return nil, fmt.Errorf("decode event batch: event %d has no body", i)
		}
	}
	return b, nil
}

// DecodeCallBatch decodes a CALLS message body.
func DecodeCallBatch(data []byte) (*CallBatch, error) {
	b := &CallBatch{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("decode call batch: %w", err)
	}
	if err := checkVersion(b.GetSchemaVersion()); err != nil {
		return nil, fmt.Errorf("decode call batch: %w", err)
	}
	if err := expandBatch(b); err != nil {
		return nil, fmt.Errorf("decode call batch: %w", err)
	}
	return b, nil
}

func checkVersion(v uint32) error {
	if v == 0 || v > Version {
		return fmt.Errorf("%w %d (this build reads 1..%d)", ErrVersion, v, Version)
	}
	return nil
}

// TypeName is the value of HeaderType for m.
func TypeName(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }

// Counts is what one call adds to its edge: the connections it counts (1
// for a whole connection or the first emission of an open one, 0 for its
// later emissions) and the bytes exchanged since the connection's earlier
// emissions (its totals less their prior totals, never negative), so
// summing every emission of a connection counts it once with its latest
// totals.
func Counts(c *Call) (count, sent, received uint64) {
	switch c.GetState() {
	case CallState_CALL_STATE_UNSPECIFIED, CallState_CALL_STATE_OPEN:
		count = 1
	}
	if s, p := c.GetBytesSent(), c.GetPriorBytesSent(); s > p {
		sent = s - p
	}
	if r, p := c.GetBytesReceived(), c.GetPriorBytesReceived(); r > p {
		received = r - p
	}
	return count, sent, received
}

// ConnectionID is the id of the connection a call is an emission of: its
// id up to '#', which the emissions after the first add (so each emission
// has an id of its own, and all share the connection's).
func ConnectionID(c *Call) string {
	id := c.GetId()
	for i := 0; i < len(id); i++ {
		if id[i] == '#' {
			return id[:i]
		}
	}
	return id
}
