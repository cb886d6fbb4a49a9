package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/weftobs/weft/streams/natsauth"
	"github.com/weftobs/weft/streams/natsconn"
)

// natsFlags are the connection flags of every command that talks to NATS.
type natsFlags struct {
	natsconn.Options
}

func (f *natsFlags) register(fs *pflag.FlagSet, defaultURL string) {
	f.registerInbox(fs, defaultURL, "", "prefix of this connection's reply subjects instead of _INBOX (weft run sets its stages' own)")
}

// registerOperator registers the flags of an operator's command (weft
// streams, replay, dlq): its replies come under natsauth's operator
// inbox, the one the chart's operator identity may read. Any NATS that
// allows _INBOX.> allows it too.
func (f *natsFlags) registerOperator(fs *pflag.FlagSet) {
	f.registerInbox(fs, natsconn.DefaultURL, natsauth.OperatorInboxPrefix, "prefix of this connection's reply subjects")
}

func (f *natsFlags) registerInbox(fs *pflag.FlagSet, defaultURL, defaultInbox, inboxUsage string) {
	fs.StringVar(&f.URL, "nats-url", envOr("WEFT_NATS_URL", defaultURL), "NATS server URL(s), comma-separated [$WEFT_NATS_URL]")
	fs.StringVar(&f.User, "nats-user", os.Getenv("WEFT_NATS_USER"), "NATS user [$WEFT_NATS_USER]")
	fs.StringVar(&f.Password, "nats-password", os.Getenv("WEFT_NATS_PASSWORD"), "NATS password [$WEFT_NATS_PASSWORD]")
	fs.StringVar(&f.CredsFile, "nats-creds", os.Getenv("WEFT_NATS_CREDS"), "NATS creds file [$WEFT_NATS_CREDS]")
	fs.StringVar(&f.TokenFile, "nats-token-file", os.Getenv("WEFT_NATS_TOKEN_FILE"), "file holding the NATS token, read at every (re)connect: a Kubernetes projected service-account token in the chart [$WEFT_NATS_TOKEN_FILE]")
	fs.StringVar(&f.InboxPrefix, "nats-inbox-prefix", envOr("WEFT_NATS_INBOX_PREFIX", defaultInbox), inboxUsage+" [$WEFT_NATS_INBOX_PREFIX]")
	fs.StringVar(&f.TLSCA, "nats-tls-ca", os.Getenv("WEFT_NATS_TLS_CA"), "CA bundle for the NATS server's certificate [$WEFT_NATS_TLS_CA]")
	fs.StringVar(&f.TLSCert, "nats-tls-cert", os.Getenv("WEFT_NATS_TLS_CERT"), "client certificate for mutual TLS [$WEFT_NATS_TLS_CERT]")
	fs.StringVar(&f.TLSKey, "nats-tls-key", os.Getenv("WEFT_NATS_TLS_KEY"), "client key for mutual TLS [$WEFT_NATS_TLS_KEY]")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// defaultDataDir is $WEFT_DATA_DIR, else $XDG_DATA_HOME/weft, else
// ~/.local/share/weft, else ./.weft.
func defaultDataDir() string {
	if v := os.Getenv("WEFT_DATA_DIR"); v != "" {
		return v
	}
	if v := os.Getenv("XDG_DATA_HOME"); v != "" {
		return filepath.Join(v, "weft")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "weft")
	}
	return ".weft"
}

// nodeName is $WEFT_NODE_NAME (the downward API's spec.nodeName in a pod),
// else the host name.
func nodeName() string {
	if v := os.Getenv("WEFT_NODE_NAME"); v != "" {
		return v
	}
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}
