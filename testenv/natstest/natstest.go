// Package natstest starts a real, embedded NATS JetStream server for one
// test, file-backed in the test's temp dir, and tears it down with the test.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/bench"
	"github.com/weftobs/weft/streams/embedded"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
)

// Server is a test's NATS server and a client connection to it.
type Server struct {
	*embedded.Server
	Dir  string
	NC   *nats.Conn
	JS   jetstream.JetStream
	Addr string // host:port the server listens on
}

// Start starts a server on a free loopback port with file storage in a
// fresh temp dir. Shutdown happens in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir(), "127.0.0.1:-1")
}

// StartIn starts a server with its store in dir listening on listen; use it
// to restart a server on the same store and port.
func StartIn(t testing.TB, dir, listen string) *Server {
	t.Helper()
	s, err := embedded.Start(embedded.Options{DataDir: dir, Listen: listen, ServerName: "test"})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js, err := natsconn.Connect(ctx, natsconn.Options{URL: s.URL(), Name: t.Name()}, nil)
	if err != nil {
		s.Stop()
		t.Fatalf("connect nats: %v", err)
	}
	srv := &Server{Server: s, Dir: dir, NC: nc, JS: js, Addr: s.Addr().String()}
	t.Cleanup(func() {
		nc.Close()
		s.Stop()
	})
	return srv
}

// CreateStream creates a file-backed stream for a test.
func (s *Server) CreateStream(t testing.TB, name string, subjects ...string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	return st
}

// CheckFor polls f until it returns nil or timeout passes, then fails the
// test with f's last error. Use it instead of sleeping.
func CheckFor(t testing.TB, timeout, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("condition not met after %v: %v", timeout, err)
}

// PublishTCPEvents publishes n synthetic TCP events of node to EVENTS, as
// a collector does (batches of perBatch, each with its Msg-Id), then one
// message that is not a batch at all: what a stage dead-letters.
func (s *Server) PublishTCPEvents(t testing.TB, node string, n, perBatch int) {
	t.Helper()
	ctx := context.Background()
	p, err := publish.New(s.NC, publish.Config{Node: node, MaxBatchItems: perBatch}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range bench.Events(n) {
		if err := p.Publish(ctx, schema.EventSubject(node, schema.KindTCP), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	bad := nats.NewMsg(schema.EventSubject(node, schema.KindTCP))
	bad.Data = []byte("garbage")
	if _, err := s.JS.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
}
