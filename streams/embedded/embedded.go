// Package embedded runs a NATS server with JetStream inside the weft
// process, file storage under the data dir: the default of `weft up`, and
// what tests and benchmarks run against. It is the real nats-server, not a
// stand-in.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure the embedded server.
type Options struct {
	// DataDir holds JetStream's file store (DataDir/jetstream).
	DataDir string
	// Listen is host:port for clients; "127.0.0.1:-1" picks a free port.
	// Default 127.0.0.1:4222.
	Listen string
	// ServerName names the server; default "weft".
	ServerName string
	// Logger receives the server's notices and errors; nil discards them.
	Logger *slog.Logger
	// Memory stores JetStream in memory instead of files (tests).
	Memory bool
	// MaxStore bounds JetStream's file store, in bytes (FitStreams gives
	// one that fits the disk); 0 leaves nats-server's default, a share
	// of the disk free at start.
	MaxStore int64
}

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
}

// Start starts the server and waits until it accepts clients.
func Start(o Options) (*Server, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:4222"
	}
	if o.ServerName == "" {
		o.ServerName = "weft"
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen port %q: %w", portStr, err)
	}
	if o.DataDir == "" && !o.Memory {
		return nil, errors.New("embedded nats: a data dir is needed for file storage")
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		NoSigs:     true,
		// Batches are up to a few hundred KiB; leave room.
		MaxPayload: 8 << 20,
	}
	if !o.Memory {
		opts.StoreDir = filepath.Join(o.DataDir, "jetstream")
		opts.JetStreamMaxStore = o.MaxStore
	} else {
		opts.StoreDir = o.DataDir
		opts.JetStreamMaxStore = -1
	}
	if port >= 0 {
		// A port taken by another `weft up` must be an error, not a retry.
		ln, lerr := net.Listen("tcp", o.Listen)
		if lerr != nil {
			return nil, fmt.Errorf("embedded nats: listen on %s: %w (is another weft up running? use --nats-listen or --nats-url)", o.Listen, lerr)
		}
		ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Logger != nil {
		s.SetLoggerV2(&slogAdapter{o.Logger}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: not ready after 10s", o.Listen)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("embedded nats: jetstream did not start (check the data dir is writable)")
	}
	return &Server{s}, nil
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ClientURL() }

// Stop shuts the server down and waits until it has. It is idempotent.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
