package natsconn_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/testenv/natstest"
)

// A server that comes up after the client starts is waited for: the
// client is told of each failed attempt, then connects with JetStream.
func TestConnectWaitForLateServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var mu sync.Mutex
	var attempts []int
	var lastErr error
	type result struct{ err error }
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		nc, js, err := natsconn.ConnectWait(ctx, natsconn.Options{URL: "nats://" + addr, ConnectTimeout: time.Second}, nil,
			func(n int, err error) {
				mu.Lock()
				attempts = append(attempts, n)
				lastErr = err
				mu.Unlock()
			})
		if err == nil {
			_, err = js.AccountInfo(ctx)
			nc.Close()
		}
		done <- result{err}
	}()
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(attempts) < 2 {
			return context.DeadlineExceeded
		}
		return nil
	})
	mu.Lock()
	if !strings.Contains(lastErr.Error(), addr) {
		t.Errorf("a failed attempt's error does not name the server: %v", lastErr)
	}
	mu.Unlock()
	natstest.StartIn(t, t.TempDir(), addr)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("ConnectWait after the server came up: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ConnectWait did not connect within 30 s of the server coming up")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range attempts {
		if n != i+1 {
			t.Fatalf("attempts reported %v, want 1, 2, 3, …", attempts)
		}
	}
}

// Options that can never work fail at once, not after retries.
func TestConnectWaitBadOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	called := false
	_, _, err := natsconn.ConnectWait(ctx, natsconn.Options{URL: "nats://127.0.0.1:1", TLSCert: "x.pem"}, nil, func(int, error) { called = true })
	if err == nil || !strings.Contains(err.Error(), "--nats-tls-key") || called {
		t.Fatalf("got err %v (waited: %v), want the options' error at once", err, called)
	}
}
