// Package natsconn connects to a NATS server with the options users have:
// URL, user/password, creds file, TLS with a CA and a client certificate.
// It owns the connection's options and nothing else.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultURL is where `weft up` serves NATS and where every other command
// looks for it.
const DefaultURL = "nats://127.0.0.1:4222"

// Options are how to reach NATS.
type Options struct {
	URL       string // one URL or a comma-separated list
	User      string
	Password  string
	CredsFile string // NATS decentralised-auth creds
	// TokenFile is read at every connect and reconnect and sent as the
	// connection's token: a Kubernetes projected service-account token,
	// which the kubelet rewrites before it expires (the chart's NATS
	// checks it through weft's auth callout; see streams/natsauth).
	TokenFile string
	// InboxPrefix replaces "_INBOX" for the replies this connection
	// asks for, so that an identity allowed to subscribe only to its own
	// inboxes still gets its JetStream replies (natsauth.InboxPrefix).
	InboxPrefix string
	TLSCA       string // CA bundle that signs the server
	TLSCert     string // client certificate (mutual TLS)
	TLSKey      string
	// Name is the client connection name the server shows.
	Name string
	// ConnectTimeout bounds the first connect. Default 5s.
	ConnectTimeout time.Duration
}

// Validate reports every problem in o.
func (o Options) Validate() error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("nats url is empty"))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, errors.New("nats tls: a client certificate needs both --nats-tls-cert and --nats-tls-key"))
	}
	if n := btoi(o.CredsFile != "") + btoi(o.User != "") + btoi(o.TokenFile != ""); n > 1 {
		errs = append(errs, errors.New("nats auth: use one of a creds file, user/password or a token file"))
	}
	return errors.Join(errs...)
}

// Connect connects and returns the connection and a JetStream context. The
// first connect fails fast with an error naming the URL; after that the
// client reconnects forever, so a server restart is survived.
func Connect(ctx context.Context, o Options, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := Conn(ctx, o, log)
	if err != nil {
		return nil, nil, err
	}
	timeout := connectTimeout(ctx, o)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", o.URL, err)
	}
	// Fail now, not at the first publish, when the server has no JetStream.
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream at %s: %w", o.URL, err)
	}
	return nc, js, nil
}

func connectTimeout(ctx context.Context, o Options) time.Duration {
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	return timeout
}

// Conn connects without JetStream (the auth callout's connection, in an
// account that has none); Connect says how.
func Conn(ctx context.Context, o Options, log *slog.Logger) (*nats.Conn, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := connectTimeout(ctx, o)
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// Publishes made while disconnected wait here, bounded; the
		// publisher's own buffer bound is the one users set.
		nats.ReconnectBufSize(32 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.TokenFile != "" {
		// Read before connecting, so that a missing file is an error
		// naming it, not an authentication failure.
		if _, err := readToken(o.TokenFile); err != nil {
			return nil, err
		}
		file := o.TokenFile
		opts = append(opts, nats.TokenHandler(func() string {
			tok, err := readToken(file)
			if err != nil {
				log.Warn("nats token", "err", err)
			}
			return tok
		}))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", o.URL, err)
	}
	return nc, nil
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("nats token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("nats token file %s is empty", file)
	}
	return tok, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
