// Package stagehost is a stage.Host for tests: a JetStream connection, an
// HTTP mux and a recorded Fatal.
package stagehost

import (
	"net/http"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/stage"
)

// Host implements stage.Host over js.
type Host struct {
	JS  jetstream.JetStream
	Mux *http.ServeMux

	mu     sync.Mutex
	fatals []error
}

var _ stage.Host = (*Host)(nil)

// New returns a host over js.
func New(js jetstream.JetStream) *Host { return &Host{JS: js, Mux: http.NewServeMux()} }

// JetStream returns the connection.
func (h *Host) JetStream() jetstream.JetStream { return h.JS }

// Handle registers on Mux.
func (h *Host) Handle(pattern string, hd http.Handler) { h.Mux.Handle(pattern, hd) }

// Fatal records err.
func (h *Host) Fatal(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, err)
}

// Fatals returns the errors passed to Fatal.
func (h *Host) Fatals() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.fatals...)
}
