package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftobs/weft/streams/natsauth"
	"github.com/weftobs/weft/streams/natsconn"
)

// AuthUser is the NATS user the auth callout connects as (the chart's
// nats.conf lists it in auth_callout.auth_users).
const AuthUser = "weft-auth"

func init() { extraCommands = append(extraCommands, newNatsAuthCmd) }

func newNatsAuthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats-auth",
		Short: "The NATS auth callout of the chart's NATS: each stage gets only the permissions its job needs",
		Long: `A NATS server of the chart runs 'weft nats-auth keygen' before it starts
and 'weft nats-auth serve' beside it. A stage connects with its pod's
projected service-account token; serve verifies the token against the
cluster's service-account issuer keys and admits the connection as a user
allowed only what the stages of that service account need, on the node the
token names (a collector: publish to weft.events.<node>.> and nothing else).`,
	}
	cmd.AddCommand(newNatsAuthKeygenCmd(), newNatsAuthServeCmd())
	return cmd
}

func newNatsAuthKeygenCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "keygen --dir DIR",
		Short: "Write a fresh issuer key and callout password, and the nats.conf include naming them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return natsauth.Keygen(dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/etc/nats/auth", "directory to write issuer.nk, password and auth.conf into")
	return cmd
}

func newNatsAuthServeCmd() *cobra.Command {
	var o natsAuthServeOptions
	cmd := &cobra.Command{
		Use:   "serve --dir DIR --identities FILE -f TOPOLOGY",
		Short: "Answer the NATS server's authorization requests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return natsAuthServe(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dir, "dir", "/etc/nats/auth", "directory keygen wrote")
	fs.StringVar(&o.identities, "identities", "/etc/nats/identities.json", "which service accounts run which stages (the chart writes it)")
	fs.StringVarP(&o.topologyFile, "file", "f", "/etc/weft/topology.yaml", "topology file")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:7680", "HTTP address for /healthz and /readyz (ok while connected to its server)")
	fs.StringVar(&o.jwksFile, "jwks-file", "", "the service-account issuer's keys as a JWKS file; empty: ask the API server (/openid/v1/jwks)")
	o.nats.register(fs, "tls://127.0.0.1:4222")
	return cmd
}

type natsAuthServeOptions struct {
	dir, identities, topologyFile, jwksFile, listen string
	nats                                            natsFlags
}

func natsAuthServe(ctx context.Context, o natsAuthServeOptions) error {
	log := slog.Default().With("component", "nats-auth")
	cfg, err := natsauth.LoadConfig(o.identities)
	if err != nil {
		return err
	}
	topo, err := loadTopology(o.topologyFile, registry())
	if err != nil {
		return err
	}
	if err := cfg.CheckTopology(topo); err != nil {
		return fmt.Errorf("%s: %w", o.identities, err)
	}
	seed, err := os.ReadFile(filepath.Join(o.dir, "issuer.nk"))
	if err != nil {
		return err
	}
	issuer, err := nkeys.FromSeed(seed)
	if err != nil {
		return fmt.Errorf("%s/issuer.nk: %w", o.dir, err)
	}
	fetch, err := jwksFetcher(o.jwksFile)
	if err != nil {
		return err
	}
	nopts := o.nats.Options
	if nopts.User == "" && nopts.CredsFile == "" && nopts.TokenFile == "" {
		pw, err := os.ReadFile(filepath.Join(o.dir, "password"))
		if err != nil {
			return err
		}
		nopts.User, nopts.Password = AuthUser, strings.TrimSpace(string(pw))
	}
	nopts.Name = "weft nats-auth"
	// The server starts beside this process: wait for it.
	var nc *nats.Conn
	for {
		if nc, err = natsconn.Conn(ctx, nopts, log); err == nil {
			break
		}
		log.Info("waiting for the NATS server", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	defer nc.Close()
	c := &natsauth.Callout{
		Config: cfg, Topology: topo, Issuer: issuer, Logger: log,
		Verifier: &natsauth.Verifier{Audience: cfg.Audience, Fetch: fetch},
	}
	sub, err := c.Serve(nc)
	if err != nil {
		return err
	}
	health := func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() || !sub.IsValid() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", health)
	mux.HandleFunc("GET /readyz", health)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	log.Info("answering NATS authorization requests", "server", nc.ConnectedServerName(), "service_accounts", len(cfg.ServiceAccounts), "operators", len(cfg.Operators))
	<-ctx.Done()
	_ = sub.Drain()
	return nil
}

// jwksFetcher reads the issuer keys from file, or else from the API
// server this pod runs under.
func jwksFetcher(file string) (natsauth.KeyFetcher, error) {
	if file != "" {
		return func(context.Context) ([]byte, error) { return os.ReadFile(file) }, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, errors.Join(errors.New("nats-auth: no --jwks-file and not in a cluster"), err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		return cs.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	}, nil
}
