package natsauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/weftobs/weft/streams/topology"
)

// Config is the identities file the chart writes beside the NATS
// configuration: which service accounts run which stages.
type Config struct {
	// Namespace is the release's; a token from another namespace is
	// refused.
	Namespace string `json:"namespace"`
	// Audience is the audience of the projected tokens stages present.
	Audience string `json:"audience"`
	// Account is the NATS account the stages' users join (the one with
	// JetStream).
	Account string `json:"account"`
	// ServiceAccounts maps a service account to the stages its pods run.
	ServiceAccounts map[string][]string `json:"serviceAccounts"`
	// Operators are service accounts no pod runs as: a person's token
	// for one (kubectl create token) gets the operator's permissions
	// (ForOperator), for weft streams, replay and dlq.
	Operators []string `json:"operators,omitempty"`
}

// LoadConfig reads an identities file, strictly.
func LoadConfig(file string) (Config, error) {
	var c Config
	b, err := os.ReadFile(file)
	if err != nil {
		return c, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", file, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	for k, v := range map[string]string{"namespace": c.Namespace, "audience": c.Audience, "account": c.Account} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is empty", k))
		}
	}
	if len(c.ServiceAccounts) == 0 {
		errs = append(errs, errors.New("serviceAccounts is empty"))
	}
	for _, op := range c.Operators {
		if _, ok := c.ServiceAccounts[op]; ok {
			errs = append(errs, fmt.Errorf("service account %s is both an operator and a stage's", op))
		}
	}
	return errors.Join(errs...)
}

// CheckTopology reports service accounts that name stages t does not have.
func (c Config) CheckTopology(t *topology.Topology) error {
	var errs []error
	for sa, stages := range c.ServiceAccounts {
		for _, s := range stages {
			if t.Stage(s) == nil {
				errs = append(errs, fmt.Errorf("service account %s: topology %s has no stage %q", sa, t.Metadata.Name, s))
			}
		}
	}
	return errors.Join(errs...)
}

// Callout answers the NATS server's authorization requests
// ($SYS.REQ.USER.AUTH, NATS auth callout): a connection presents a
// projected service-account token; Callout verifies it and answers with a
// user in Config.Account that may do only what the stages of that service
// account need, on the node the token names (ForStages). Anything else is
// refused with the reason, logged here and by the server.
type Callout struct {
	Config   Config
	Topology *topology.Topology
	Verifier *Verifier
	// Issuer signs the answers; its public key is the auth_callout
	// issuer of the server's configuration.
	Issuer nkeys.KeyPair
	Logger *slog.Logger
}

// SysAuthSubject is where a NATS server asks its auth callout.
const SysAuthSubject = "$SYS.REQ.USER.AUTH"

// Serve subscribes on nc, a connection as one of the server's auth_users.
// It answers only the requests of the server nc is connected to: each
// server of a cluster has its own callout, with its own issuer key.
func (c *Callout) Serve(nc *nats.Conn) (*nats.Subscription, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return nc.Subscribe(SysAuthSubject, func(m *nats.Msg) {
		req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
		if err != nil {
			log.Warn("auth callout: undecodable request", "err", err)
			return
		}
		if req.Server.ID != nc.ConnectedServerId() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
		resp.Audience = req.Server.ID
		uc, id, err := c.Authorize(ctx, &req.AuthorizationRequest)
		if err == nil {
			resp.Jwt, err = uc.Encode(c.Issuer)
		}
		if err != nil {
			resp.Error = err.Error()
			log.Warn("nats connection refused", "reason", err, "client", req.ClientInformation.Host,
				"name", req.ClientInformation.Name, "server", req.Server.Name)
		} else {
			log.Debug("nats connection admitted", "user", uc.Name, "pod", id.Pod, "node", id.Node)
		}
		out, err := resp.Encode(c.Issuer)
		if err != nil {
			log.Error("auth callout: sign response", "err", err)
			return
		}
		_ = m.Respond([]byte(out))
	})
}

// Authorize decides on one connection: the user to admit it as, or why
// not.
func (c *Callout) Authorize(ctx context.Context, req *jwt.AuthorizationRequest) (*jwt.UserClaims, Identity, error) {
	tok := req.ConnectOptions.Token
	if tok == "" {
		return nil, Identity{}, errors.New("no token: weft's NATS admits only stages presenting their service-account token")
	}
	id, err := c.Verifier.Verify(ctx, tok)
	if err != nil {
		return nil, id, err
	}
	if id.Namespace != c.Config.Namespace {
		return nil, id, fmt.Errorf("service account %s/%s: not in namespace %s", id.Namespace, id.ServiceAccount, c.Config.Namespace)
	}
	if slices.Contains(c.Config.Operators, id.ServiceAccount) {
		return c.operator(req, id)
	}
	stages, ok := c.Config.ServiceAccounts[id.ServiceAccount]
	if !ok {
		return nil, id, fmt.Errorf("service account %s/%s runs no stage", id.Namespace, id.ServiceAccount)
	}
	if id.Node == "" && anyNodeLocal(c.Topology, stages) {
		return nil, id, fmt.Errorf("service account %s/%s: token names no node (Kubernetes 1.30 or later writes it)", id.Namespace, id.ServiceAccount)
	}
	p, err := ForStages(c.Topology, stages, id.Node)
	if err != nil {
		return nil, id, fmt.Errorf("service account %s: %w", id.ServiceAccount, err)
	}
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = c.Config.Account
	uc.Name = id.ServiceAccount
	if anyNodeLocal(c.Topology, stages) {
		uc.Name += "@" + id.Node
	}
	uc.Pub.Allow.Add(p.Publish...)
	uc.Sub.Allow.Add(p.Subscribe...)
	// The user ends with its token: the client reconnects with the
	// kubelet's fresh one, and a deleted pod's token is not good for
	// longer than it was.
	uc.Expires = id.Expires.Unix()
	return uc, id, nil
}

// operator admits a person's token for an operator service account. A
// token bound to a pod is refused: the operator identity is for people
// asking the API server for a token, not for a pod that someone started
// under that service account.
func (c *Callout) operator(req *jwt.AuthorizationRequest, id Identity) (*jwt.UserClaims, Identity, error) {
	if id.Pod != "" {
		return nil, id, fmt.Errorf("operator service account %s/%s: token is bound to pod %s; use kubectl create token", id.Namespace, id.ServiceAccount, id.Pod)
	}
	p := ForOperator(c.Topology)
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = c.Config.Account
	uc.Name = id.ServiceAccount
	uc.Pub.Allow.Add(p.Publish...)
	uc.Sub.Allow.Add(p.Subscribe...)
	uc.Expires = id.Expires.Unix()
	return uc, id, nil
}

// Keygen writes into dir a fresh account key that signs the callout's
// answers (issuer.nk), a password for the callout's own connection
// (password), and auth.conf, which the chart's nats.conf includes: the
// variables WEFT_AUTH_ISSUER and WEFT_AUTH_PASSWORD. The chart runs it
// each time a NATS pod starts, into memory: the key never leaves the pod.
func Keygen(dir string) error {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return err
	}
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	pw := hex.EncodeToString(b)
	conf := fmt.Sprintf("# Written by weft nats-auth keygen when this server's pod started.\nWEFT_AUTH_ISSUER: %q\nWEFT_AUTH_PASSWORD: %q\n", pub, pw)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("nats-auth keygen: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"issuer.nk", seed}, {"password", []byte(pw)}, {"auth.conf", []byte(conf)}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("nats-auth keygen: %w", err)
		}
	}
	return nil
}
