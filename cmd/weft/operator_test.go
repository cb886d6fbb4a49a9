package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/bench"
	"github.com/weftobs/weft/streams/consume"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestOperatorIdentity runs weft's operator commands against the chart's
// NATS (startChartNATS) as a person does: with a token for the chart's
// operator ServiceAccount (kubectl create token) and the operator's client
// certificate from its Secret. The streams hold what the stages put there,
// each with its own identity: the correlator provisioned them, a
// collector published events, the correlator calls, and the graph stage
// dead-lettered one. streams ls/info, replay (--out, --to graph and --to
// correlator, which publishes calls and dead letters), dlq ls and
// redrive all work, and nothing they do is refused by NATS. A
// stage's identity cannot do the operator's things; an operator token for
// another audience, another namespace, a service account that is no
// operator, or bound to a pod, is refused.
func TestOperatorIdentity(t *testing.T) {
	env := startChartNATS(t, map[string]any{
		"nats": map[string]any{"replicas": 1},
		"otlp": map[string]any{"endpoint": "http://127.0.0.1:4317"},
	})
	ctx := context.Background()
	connect := func(o natsconn.Options) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		nc, js, err := natsconn.Connect(ctx, o, nil)
		if err != nil {
			t.Fatalf("connect: %v\nnats-auth:\n%s", err, env.auth.stderr)
		}
		t.Cleanup(nc.Close)
		return nc, js
	}

	// The stages' doing, each with its own identity.
	_, corJS := connect(env.stageOpts(t, "weft-correlator", "node-b", "correlator"))
	if _, err := provision.EnsureStreams(ctx, corJS, env.topo, provision.Options{MaxReplicas: 1}); err != nil {
		t.Fatalf("the correlator provisions the streams: %v", err)
	}
	colNC, _ := connect(env.stageOpts(t, "weft-collector", "node-a", "collector", "node-otlp"))
	publishAll(t, colNC, "node-a", func(p *publish.Publisher) error {
		for _, e := range bench.Events(20) {
			if err := p.Publish(ctx, schema.EventSubject("node-a", schema.KindTCP), e); err != nil {
				return err
			}
		}
		return nil
	})
	corNC := corJS.Conn()
	app := &schema.Endpoint{Node: "node-a", Pod: &schema.Pod{Uid: "u-app", Name: "app", Namespace: "shop", Node: "node-a"},
		Container: &schema.Container{Id: "c-app", Name: "app"}}
	db := &schema.Endpoint{Node: "node-b", Pod: &schema.Pod{Uid: "u-db", Name: "db-0", Namespace: "shop", Node: "node-b"},
		Container: &schema.Container{Id: "c-db", Name: "db"}}
	publishAll(t, corNC, "correlator", func(p *publish.Publisher) error {
		for i := range 3 {
			at := uint64(time.Now().UnixNano())
			c := &schema.Call{Id: fmt.Sprint("c", i), Transport: schema.Transport_TRANSPORT_TCP, Port: 5432, Client: app, Server: db,
				BytesSent: 10, BytesReceived: 100, StartUnixNano: at, EndUnixNano: at + 5}
			if err := p.Publish(ctx, schema.CallsPrefix+"node-b", c); err != nil {
				return err
			}
			if err := p.Flush(ctx); err != nil { // one message per call
				return err
			}
		}
		return nil
	})
	// The graph stage dead-letters CALLS' first message.
	_, graphJS := connect(env.stageOpts(t, "weft-graph", "node-b", "graph"))
	cons, err := graphJS.CreateOrUpdateConsumer(ctx, schema.StreamCalls, jetstream.ConsumerConfig{Durable: "graph-CALLS", FilterSubject: "weft.calls.>"})
	if err != nil {
		t.Fatalf("graph consumer: %v", err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := consume.NewDeadLetters(graphJS, "graph", nil).Send(ctx, m, "graph store unavailable"); err != nil {
		t.Fatalf("graph dead-letters: %v", err)
	}
	_ = m.Ack()
	if err := graphJS.DeleteConsumer(ctx, schema.StreamCalls, "graph-CALLS"); err != nil {
		t.Fatal(err)
	}
	// A stage's identity cannot read the DLQ with the operator's command.
	g := env.stageOpts(t, "weft-graph", "node-b", "graph")
	stdout, stderr, err := runWeft(t, "dlq", "ls", "--nats-url", env.url, "--nats-token-file", g.TokenFile,
		"--nats-tls-ca", g.TLSCA, "--nats-tls-cert", g.TLSCert, "--nats-tls-key", g.TLSKey, "--nats-inbox-prefix", g.InboxPrefix)
	if err == nil || strings.Contains(stdout, "graph store unavailable") {
		t.Errorf("weft dlq ls with the graph stage's identity read the DLQ (%v):\n%s%s", err, stdout, stderr)
	}
	t.Logf("weft dlq ls as the graph stage: %v\n%s", err, stderr)

	violationsBefore := len(grepAll(env.logs.lines(), "Violation"))

	// The operator, as docs/security.md tells: a token for the operator
	// ServiceAccount, the operator's certificate, replies under the
	// operator's inbox (the commands' default).
	opToken := func(sa, aud string) string {
		f := filepath.Join(t.TempDir(), "token")
		writeFile(t, f, []byte(env.iss.personToken(t, chartNamespace, sa, aud)))
		return f
	}
	operator := []string{"--nats-url", env.url, "--nats-token-file", opToken("weft-operator", "weft-nats"),
		"--nats-tls-ca", env.pod.file("operator/ca.crt"), "--nats-tls-cert", env.pod.file("operator/tls.crt"), "--nats-tls-key", env.pod.file("operator/tls.key")}
	weft := func(args ...string) (string, string) {
		t.Helper()
		stdout, stderr, err := runWeft(t, append(args, operator...)...)
		if err != nil {
			t.Fatalf("weft %s: %v\n%s%s\nnats-auth:\n%s", strings.Join(args, " "), err, stdout, stderr, env.auth.stderr)
		}
		return stdout, stderr
	}
	dataDir := t.TempDir()
	out := filepath.Join(t.TempDir(), "calls.ndjson")
	steps := []struct {
		args []string
		want string // in stdout or stderr
	}{
		{[]string{"streams", "ls"}, "CALLS"},
		{[]string{"streams", "info", "EVENTS"}, "messages"},
		{[]string{"streams", "info", "CALLS"}, "sequences 1…3"},
		{[]string{"replay", "--stream", "CALLS", "--start-seq", "1", "--out", out}, "replayed 3 messages of CALLS"},
		{[]string{"replay", "--stream", "CALLS", "--start-seq", "1", "--to", "graph", "-f", env.topoFile, "--data-dir", dataDir, "--no-progress"},
			"replayed CALLS sequences 1…3 into graph: 3 messages, 3 items, 0 to DLQ"},
		{[]string{"replay", "--stream", "EVENTS", "--start-seq", "1", "--to", "correlator", "-f", env.topoFile, "--data-dir", t.TempDir(), "--no-progress"},
			"replayed EVENTS sequences 1…"},
		{[]string{"dlq", "ls"}, "graph store unavailable"},
		{[]string{"dlq", "redrive", "--stage", "graph"}, "redriven 1 of 1 dead letters"},
		{[]string{"dlq", "show", "--stage", "graph"}, "no dead letters"},
	}
	for _, s := range steps {
		stdout, stderr := weft(s.args...)
		if !strings.Contains(stdout+stderr, s.want) {
			t.Errorf("weft %s: want %q in\n%s%s", strings.Join(s.args, " "), s.want, stdout, stderr)
		}
	}
	if got := len(readNDJSON(t, out)); got != 3 {
		t.Errorf("replay --out wrote %d lines, want 3 calls", got)
	}
	// The redriven letter is back in CALLS, after the calls the
	// correlator's replay folded.
	if st := streamState(t, corJS, schema.StreamCalls); st.LastSeq < 4 {
		t.Errorf("CALLS last sequence %d after redrive, want 4 or more", st.LastSeq)
	}
	if v := grepAll(env.logs.lines(), "Violation"); len(v) != violationsBefore {
		t.Errorf("the operator's commands were refused:\n%s", strings.Join(v[violationsBefore:], "\n"))
	}

	// What the operator may not do either: change a stream.
	opNC, opJS := connect(natsconn.Options{URL: env.url, TokenFile: opToken("weft-operator", "weft-nats"),
		TLSCA: env.pod.file("operator/ca.crt"), TLSCert: env.pod.file("operator/tls.crt"), TLSKey: env.pod.file("operator/tls.key"),
		InboxPrefix: "_INBOX._operator", ConnectTimeout: 3 * time.Second})
	checkRefused(t, env, opNC, "weft-operator", []misdeed{
		{"delete EVENTS", func() error { return opNC.Publish("$JS.API.STREAM.DELETE.EVENTS", nil) }, `"$JS.API.STREAM.DELETE.EVENTS"`},
		{"purge CALLS", func() error { return opNC.Publish("$JS.API.STREAM.PURGE.CALLS", nil) }, `"$JS.API.STREAM.PURGE.CALLS"`},
		{"read the correlators' group", func() error { return opNC.Publish("$KV.weft-group-correlator.x", nil) }, `"$KV.weft-group-correlator.x"`},
		{"read a stage's replies", func() error { _, err := opNC.SubscribeSync("_INBOX.graph.>"); return err }, `"_INBOX.graph.>"`},
	})
	if _, err := opJS.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
		t.Error("the operator created a stream")
	}

	// A stage's identity cannot do the operator's things.
	gNC, _ := connect(env.stageOpts(t, "weft-graph", "node-b", "graph"))
	checkRefused(t, env, gNC, "weft-graph", []misdeed{
		{"list streams", func() error { return gNC.Publish("$JS.API.STREAM.LIST", nil) }, `"$JS.API.STREAM.LIST"`},
		{"read the DLQ", func() error { return gNC.Publish("$JS.API.CONSUMER.CREATE.DLQ.spy", nil) }, `"$JS.API.CONSUMER.CREATE.DLQ.spy"`},
		{"remove a dead letter", func() error { return gNC.Publish("$JS.API.STREAM.MSG.DELETE.DLQ", nil) }, `"$JS.API.STREAM.MSG.DELETE.DLQ"`},
		{"redrive into CALLS", func() error { return gNC.Publish("weft.calls.node-b", []byte("x")) }, `"weft.calls.node-b"`},
		{"read EVENTS", func() error { return gNC.Publish("$JS.API.CONSUMER.CREATE.EVENTS.spy", nil) }, `"$JS.API.CONSUMER.CREATE.EVENTS.spy"`},
	})
	// Tokens that are no operator's.
	refusals := []struct {
		name, token, log string
	}{
		{"an operator token for another audience", opToken("weft-operator", "kubernetes"), "not for audience"},
		{"another service account", opToken("weft-operator-2", "weft-nats"), "weft/weft-operator-2 runs no stage"},
		{"the operator of another namespace", func() string {
			f := filepath.Join(t.TempDir(), "token")
			writeFile(t, f, []byte(env.iss.personToken(t, "other", "weft-operator", "weft-nats")))
			return f
		}(), "not in namespace weft"},
		{"an operator token bound to a pod", env.tokenFile(t, "weft-operator", "node-a", "weft-nats"), "token is bound to pod weft-operator-pod"},
	}
	for _, r := range refusals {
		t.Run("refused/"+r.name, func(t *testing.T) {
			nc, _, err := natsconn.Connect(ctx, natsconn.Options{URL: env.url, TokenFile: r.token, TLSCA: env.pod.file("operator/ca.crt"),
				TLSCert: env.pod.file("operator/tls.crt"), TLSKey: env.pod.file("operator/tls.key"), ConnectTimeout: 3 * time.Second}, nil)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), "Authorization Violation") {
				t.Errorf("error %q, want an authorization violation", err)
			}
			natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !strings.Contains(env.auth.stderr.String(), r.log) {
					return fmt.Errorf("nats-auth's log does not say %q:\n%s", r.log, env.auth.stderr)
				}
				return nil
			})
		})
	}
}

// publishAll publishes through a weft publisher on nc, as a stage does,
// and waits for every batch to be stored.
func publishAll(t *testing.T, nc *nats.Conn, node string, f func(*publish.Publisher) error) {
	t.Helper()
	p, err := publish.New(nc, publish.Config{Node: node}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// misdeed is something an identity must not do, and what NATS's log says
// when it is refused.
type misdeed struct {
	name string
	do   func() error
	log  string
}

// checkRefused does each misdeed on nc, the connection of user, and wants
// a permissions violation back and in NATS's log, naming user.
func checkRefused(t *testing.T, env *chartEnv, nc *nats.Conn, user string, misdeeds []misdeed) {
	t.Helper()
	violations := make(chan error, 16)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err })
	for _, m := range misdeeds {
		t.Run("refused/"+user+" "+m.name, func(t *testing.T) {
			if err := m.do(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-violations:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Fatalf("got %v, want a permissions violation", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no permissions violation")
			}
			natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				for _, l := range env.logs.lines() {
					if strings.Contains(l, "Violation") && strings.Contains(l, m.log) && strings.Contains(l, "WEFT/user:"+user) {
						return nil
					}
				}
				return fmt.Errorf("NATS's log has no violation for %s by %s:\n%s", m.log, user, grepLines(env.logs.String(), "Violation"))
			})
		})
	}
}
