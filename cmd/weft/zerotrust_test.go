package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"

	"github.com/weftobs/weft/charts/render"
	"github.com/weftobs/weft/streams/natsauth"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/otlprecv"
)

// ztTopology is the chart's hybrid layout on one NATS server (streams of
// one replica), with a synthetic source in the collector's place: it runs
// as the collector DaemonSet's identity and publishes its node's events as
// a collector does, without eBPF.
const ztTopology = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: zerotrust}
streams:
  EVENTS: {subjects: ["weft.events.>"], maxAge: 1h}
  CALLS:  {subjects: ["weft.calls.>"], maxAge: 1h}
  DLQ:    {subjects: ["weft.dlq.>"], maxAge: 1h}
stages:
  - {name: collector,  kind: synthetic,  deploy: daemonset, outputs: [EVENTS], config: {rate: 200, nodes: 1}}
  - {name: correlator, kind: correlator, deploy: deployment, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph,      kind: graph,      deploy: deployment, inputs: [CALLS], config: {store: embedded}}
  - {name: otlp,       kind: otlp,       deploy: deployment, inputs: [CALLS]}
  - {name: node-otlp,  kind: otlp,       deploy: sidecar, sidecarOf: collector, inputs: [EVENTS]}
`

// TestZeroTrust runs the chart's NATS (startChartNATS). It tries to get in the ways an attacker in the cluster would, and each
// attempt must be refused and show in NATS's log or nats-auth's; and runs
// the real stages, each as `weft run` with its own token, through the
// permissions end to end: nothing they do is refused.
func TestZeroTrust(t *testing.T) {
	recv := otlprecv.Start(t)
	env := startChartNATS(t, map[string]any{
		"nats": map[string]any{"replicas": 1},
		"otlp": map[string]any{"endpoint": recv.GRPCEndpoint()},
	})
	pod, url, logs, auth, topoFile := env.pod, env.url, env.logs, env.auth, env.topoFile
	tokenFile := func(sa, node, aud string) string { return env.tokenFile(t, sa, node, aud) }
	stageOpts := func(sa, node string, stages ...string) natsconn.Options { return env.stageOpts(t, sa, node, stages...) }
	const ns = chartNamespace
	ctx := context.Background()

	// Getting in at all.
	otherCA := otherCACert(t)
	connects := []struct {
		name    string
		opts    natsconn.Options
		nats    string // what NATS's log says
		natsLog string
	}{
		{"anonymous", natsconn.Options{URL: url, TLSCA: pod.file("client/ca.crt"), TLSCert: pod.file("client/tls.crt"), TLSKey: pod.file("client/tls.key")}, "Authorization Violation", "no token"},
		{"no client certificate", natsconn.Options{URL: url, TLSCA: pod.file("client/ca.crt"), TokenFile: tokenFile("weft-correlator", "node-a", "weft-nats")}, "", "TLS handshake error"},
		{"a certificate of another CA", natsconn.Options{URL: url, TLSCA: pod.file("client/ca.crt"), TLSCert: otherCA.cert, TLSKey: otherCA.key, TokenFile: tokenFile("weft-correlator", "node-a", "weft-nats")}, "", "TLS handshake error"},
		{"a token for another audience", withToken(stageOpts("weft-correlator", "node-a", "correlator"), tokenFile("weft-correlator", "node-a", "kubernetes")), "Authorization Violation", `not for audience "weft-nats"`},
		{"a service account that runs no stage", withToken(stageOpts("weft-correlator", "node-a", "correlator"), tokenFile("default", "node-a", "weft-nats")), "Authorization Violation", "runs no stage"},
		{"a token signed by another key", withToken(stageOpts("weft-correlator", "node-a", "correlator"), func() string {
			f := filepath.Join(t.TempDir(), "token")
			writeFile(t, f, []byte(newIssuer(t).token(t, ns, "weft-correlator", "node-a", "weft-nats")))
			return f
		}()), "Authorization Violation", "unknown key"},
	}
	for _, c := range connects {
		t.Run("refused/"+c.name, func(t *testing.T) {
			nc, _, err := natsconn.Connect(ctx, c.opts, nil)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if c.nats != "" && !strings.Contains(err.Error(), c.nats) {
				t.Errorf("error %q, want %q", err, c.nats)
			}
			natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !strings.Contains(logs.String()+auth.stderr.String(), c.natsLog) {
					return fmt.Errorf("neither NATS's log nor nats-auth's says %q", c.natsLog)
				}
				return nil
			})
			t.Logf("refused: %v", err)
		})
	}

	// A collector's identity doing what a collector must not.
	violations := make(chan error, 16)
	col := stageOpts("weft-collector", "node-a", "collector", "node-otlp")
	nc, js, err := natsconn.Connect(ctx, col, nil)
	if err != nil {
		t.Fatalf("the collector's identity is refused: %v\nnats-auth:\n%s", err, auth.stderr)
	}
	defer nc.Close()
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err })
	// Streams exist once a provisioning stage (the correlator) ran; a
	// collector may not create them.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
		t.Error("a collector created a stream")
	}
	misdeeds := []struct {
		name string
		do   func() error
		log  string
	}{
		{"publish another node's events", func() error { return nc.Publish("weft.events.node-b.tcp", []byte("forged")) }, `Publish Violation - Subject "weft.events.node-b.tcp"`},
		{"publish calls", func() error { return nc.Publish("weft.calls.node-a", []byte("forged")) }, `Publish Violation - Subject "weft.calls.node-a"`},
		{"publish another stage's dead letters", func() error { return nc.Publish("weft.dlq.correlator", []byte("x")) }, `Publish Violation - Subject "weft.dlq.correlator"`},
		{"read CALLS", func() error { _, err := nc.SubscribeSync("weft.calls.>"); return err }, `"weft.calls.>"`},
		{"read other nodes' events", func() error { _, err := nc.SubscribeSync("weft.events.>"); return err }, `"weft.events.>"`},
		{"read others' replies", func() error { _, err := nc.SubscribeSync("_INBOX.>"); return err }, `"_INBOX.>"`},
		{"consume CALLS", func() error {
			return nc.Publish("$JS.API.CONSUMER.CREATE.CALLS.spy", []byte(`{"stream_name":"CALLS","config":{"durable_name":"spy"}}`))
		}, `Publish Violation - Subject "$JS.API.CONSUMER.CREATE.CALLS.spy"`},
		{"delete EVENTS", func() error { return nc.Publish("$JS.API.STREAM.DELETE.EVENTS", nil) }, `Publish Violation - Subject "$JS.API.STREAM.DELETE.EVENTS"`},
	}
	for _, m := range misdeeds {
		t.Run("refused/collector "+m.name, func(t *testing.T) {
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
				for _, l := range logs.lines() {
					if strings.Contains(l, "Violation") && strings.Contains(l, m.log) && strings.Contains(l, "WEFT/user:weft-collector@node-a") {
						t.Logf("NATS log: %s", l)
						return nil
					}
				}
				return fmt.Errorf("NATS's log has no violation for %s by weft-collector@node-a:\n%s", m.log, grepLines(logs.String(), "Violation"))
			})
		})
	}

	// The real stages, each with its own identity, end to end.
	violationsBefore := len(grepAll(logs.lines(), "Violation"))
	apiToken := "s3cret-api-token"
	apiTokenFile := filepath.Join(t.TempDir(), "api-token")
	writeFile(t, apiTokenFile, []byte(apiToken))
	run := func(sa, node, stages string, env ...string) (*proc, string) {
		o := stageOpts(sa, node, strings.Split(stages, ",")...)
		addr := freePort(t)
		p := startEnv(t, append(env, "WEFT_NODE_NAME="+node), "run", "-f", topoFile, "--stage", stages, "--listen", addr, "--data-dir", t.TempDir(),
			"--nats-url", url, "--nats-token-file", o.TokenFile, "--nats-tls-ca", o.TLSCA, "--nats-tls-cert", o.TLSCert, "--nats-tls-key", o.TLSKey,
			"--api-token-file", apiTokenFile)
		natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
			code, body, err := httpGet("http://" + addr + "/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("%s: readyz %d %v %s; stderr:\n%s", stages, code, err, body, p.stderr)
			}
			return nil
		})
		return p, addr
	}
	otlpEnv := "OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.GRPCEndpoint()
	_, _ = run("weft-correlator", "node-b", "correlator") // provisions the streams
	_, graphAddr := run("weft-graph", "node-b", "graph")
	otlpProc, _ := run("weft-otlp", "node-b", "otlp", otlpEnv)
	_, colAddr := run("weft-collector", "node-a", "collector,node-otlp", otlpEnv)

	natstest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		req, _ := http.NewRequest("GET", "http://"+graphAddr+"/api/v1/graph", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var g struct {
			Nodes []json.RawMessage
			Edges []json.RawMessage
		}
		if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
			return fmt.Errorf("graph API %d: %v", resp.StatusCode, err)
		}
		if len(g.Nodes) == 0 || len(g.Edges) == 0 {
			return fmt.Errorf("graph has %d nodes, %d edges", len(g.Nodes), len(g.Edges))
		}
		if recv.SpanCount()+recv.LogCount()+recv.MetricPointCount() == 0 {
			return fmt.Errorf("nothing reached the OTLP receiver; otlp stage:\n%s", otlpProc.stderr)
		}
		return nil
	})
	// Nothing the stages did was refused.
	if v := grepAll(logs.lines(), "Violation"); len(v) != violationsBefore {
		t.Errorf("the stages were refused:\n%s", strings.Join(v[violationsBefore:], "\n"))
	}
	if n := strings.Count(auth.stderr.String(), "nats connection refused"); n != 4 {
		t.Errorf("nats-auth refused %d connections, want the 4 with a bad or no token (the TLS refusals never reach it):\n%s", n, auth.stderr)
	}

	// The graph API without the token; probes and Prometheus without it.
	for _, c := range []struct {
		addr, path string
		want       int
	}{
		{graphAddr, "/api/v1/graph", http.StatusUnauthorized},
		{graphAddr, "/", http.StatusUnauthorized},
		{graphAddr, "/metrics", http.StatusOK},
		{graphAddr, "/healthz", http.StatusOK},
		{colAddr, "/readyz", http.StatusOK},
	} {
		code, _, err := httpGet("http://" + c.addr + c.path)
		if err != nil || code != c.want {
			t.Errorf("GET %s without the API token: %d %v, want %d", c.path, code, err, c.want)
		}
	}
	_, body, _ := httpGet("http://" + graphAddr + "/metrics")
	if v, _ := metricValue(body, "weft_http_unauthorized_requests_total", ""); v != 2 {
		// metricValue wants labels; the counter has none.
		if !strings.Contains(body, "weft_http_unauthorized_requests_total 2") {
			t.Errorf("weft_http_unauthorized_requests_total is not 2:\n%s", grepLines(body, "unauthorized"))
		}
	}
}

// chartNamespace is the namespace the chart is rendered into in these
// tests (the render's default).
const chartNamespace = "weft"

// chartEnv is a NATS server in process on the chart's rendered
// nats.conf (mutual TLS with the chart's generated CA, weft nats-auth's
// auth callout, the rendered identities), with `weft nats-auth serve` as
// the chart runs it, and a Kubernetes service-account issuer of the
// test's own (its JWKS, and tokens in the kubelet's format).
type chartEnv struct {
	pod      chartNATS
	topo     *topology.Topology
	topoFile string
	url      string
	logs     *serverLog // NATS's
	auth     *proc      // weft nats-auth serve
	iss      saIssuer
}

// startChartNATS renders ztTopology with values and starts its NATS and
// nats-auth.
func startChartNATS(t *testing.T, values map[string]any) *chartEnv {
	t.Helper()
	out, err := render.Render([]byte(ztTopology), render.Options{Values: values})
	if err != nil {
		t.Fatal(err)
	}
	pod := layOutChartNATS(t, out)
	topo, err := topology.Parse("topology.yaml", []byte(pod.topology), registry())
	if err != nil {
		t.Fatal(err)
	}
	topoFile := filepath.Join(pod.dir, "topology.yaml")
	writeFile(t, topoFile, []byte(pod.topology))

	// NATS on the chart's configuration, its log kept for the operator's
	// view of each refusal.
	t.Setenv("SERVER_NAME", "weft-nats-0") // the pod's name, in the chart
	opts, err := server.ProcessConfigFile(pod.conf)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	_, port, _ := net.SplitHostPort(freePort(t))
	opts.Port, _ = parsePort(port)
	// What the pod has that this test does not: /data, /var/run/nats.
	opts.HTTPPort, opts.StoreDir, opts.NoSigs = 0, t.TempDir(), true
	opts.PidFile = filepath.Join(t.TempDir(), "nats.pid")
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	logs := &serverLog{}
	srv.SetLoggerV2(logs, false, false, false)
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server not ready:\n%s", logs)
	}
	url := fmt.Sprintf("tls://localhost:%d", opts.Port)

	// The cluster's service-account issuer.
	iss := newIssuer(t)
	jwks := filepath.Join(pod.dir, "jwks.json")
	writeFile(t, jwks, iss.jwks(t))

	auth := start(t, "nats-auth", "serve", "--dir", filepath.Join(pod.dir, "auth"),
		"--identities", filepath.Join(pod.dir, "identities", "identities.json"), "-f", topoFile,
		"--jwks-file", jwks, "--listen", freePort(t), "--nats-url", url,
		"--nats-tls-ca", pod.file("tls/ca.crt"), "--nats-tls-cert", pod.file("tls/server.crt"), "--nats-tls-key", pod.file("tls/server.key"))
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(auth.stderr.String(), "answering NATS authorization requests") {
			return fmt.Errorf("nats-auth not serving; stderr:\n%s", auth.stderr)
		}
		return nil
	})
	return &chartEnv{pod: pod, topo: topo, topoFile: topoFile, url: url, logs: logs, auth: auth, iss: iss}
}

// tokenFile writes a pod's projected token for sa on node with aud.
func (e *chartEnv) tokenFile(t *testing.T, sa, node, aud string) string {
	f := filepath.Join(t.TempDir(), "token")
	writeFile(t, f, []byte(e.iss.token(t, chartNamespace, sa, node, aud)))
	return f
}

// stageOpts are the connection options of a stage pod of sa on node
// running stages.
func (e *chartEnv) stageOpts(t *testing.T, sa, node string, stages ...string) natsconn.Options {
	return natsconn.Options{
		URL: e.url, TokenFile: e.tokenFile(t, sa, node, "weft-nats"),
		TLSCA: e.pod.file("client/ca.crt"), TLSCert: e.pod.file("client/tls.crt"), TLSKey: e.pod.file("client/tls.key"),
		InboxPrefix: natsauth.InboxPrefix(e.topo, stages, node), ConnectTimeout: 3 * time.Second,
	}
}

func withToken(o natsconn.Options, file string) natsconn.Options { o.TokenFile = file; return o }

func parsePort(s string) (int, error) { var p int; _, err := fmt.Sscan(s, &p); return p, err }

func grepAll(lines []string, sub string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// chartNATS is what a NATS pod of the chart has under /etc/nats, laid
// out in a directory: nats.conf (its /etc/nats/ paths pointing there),
// tls/ and client/ from the rendered Secret, operator/ from the
// operator's, auth/ as `weft nats-auth keygen` writes it, identities/
// from its ConfigMap; and the topology.
type chartNATS struct {
	dir, conf, topology string
}

func (c chartNATS) file(rel string) string { return filepath.Join(c.dir, rel) }

func layOutChartNATS(t *testing.T, manifest string) chartNATS {
	t.Helper()
	c := chartNATS{dir: t.TempDir()}
	var conf string
	for _, doc := range strings.Split(manifest, "\n---") {
		var o struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil || o.Kind == "" {
			continue
		}
		switch {
		case o.Kind == "ConfigMap" && o.Data["nats.conf"] != "":
			conf = o.Data["nats.conf"]
		case o.Kind == "ConfigMap" && o.Data["identities.json"] != "":
			writeFile(t, c.file("identities/identities.json"), []byte(o.Data["identities.json"]))
		case o.Kind == "ConfigMap" && o.Data["topology.yaml"] != "":
			c.topology = o.Data["topology.yaml"]
		case o.Kind == "Secret" && strings.HasSuffix(o.Metadata.Name, "-nats-operator-tls"):
			for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
				writeFile(t, c.file("operator/"+k), b64(t, o.Data[k]))
			}
		case o.Kind == "Secret" && strings.HasSuffix(o.Metadata.Name, "-nats-tls"):
			for k, dst := range map[string]string{"ca.crt": "tls/ca.crt", "server.crt": "tls/server.crt", "server.key": "tls/server.key"} {
				writeFile(t, c.file(dst), b64(t, o.Data[k]))
			}
			for k, dst := range map[string]string{"ca.crt": "client/ca.crt", "client.crt": "client/tls.crt", "client.key": "client/tls.key"} {
				writeFile(t, c.file(dst), b64(t, o.Data[k]))
			}
		}
	}
	if conf == "" || c.topology == "" {
		t.Fatal("the chart rendered no nats.conf or no topology")
	}
	if err := natsauth.Keygen(c.file("auth")); err != nil {
		t.Fatal(err)
	}
	c.conf = c.file("nats.conf")
	writeFile(t, c.conf, []byte(strings.ReplaceAll(conf, "/etc/nats/", c.dir+"/")))
	return c
}

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// saIssuer stands for a cluster's service-account issuer: its key signs
// tokens in the form the kubelet asks the API server for (projected,
// with an audience, naming pod and node).
type saIssuer struct {
	key *rsa.PrivateKey
	kid string
}

func newIssuer(t *testing.T) saIssuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k.N.Bytes())
	return saIssuer{key: k, kid: base64.RawURLEncoding.EncodeToString(sum[:8])}
}

func (i saIssuer) jwks(t *testing.T) []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": i.kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(i.key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(i.key.E)).Bytes()),
	}}})
	return b
}

func (i saIssuer) token(t *testing.T, ns, sa, node, aud string) string {
	return i.sign(t, aud, map[string]any{
		"namespace":      ns,
		"node":           map[string]string{"name": node, "uid": "1"},
		"pod":            map[string]string{"name": sa + "-pod", "uid": "2"},
		"serviceaccount": map[string]string{"name": sa, "uid": "3"},
	})
}

// personToken is what `kubectl create token SA --audience AUD` gets: a
// token bound to no pod and no node.
func (i saIssuer) personToken(t *testing.T, ns, sa, aud string) string {
	return i.sign(t, aud, map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa, "uid": "3"}})
}

func (i saIssuer) sign(t *testing.T, aud string, k8s map[string]any) string {
	now := time.Now()
	sa := k8s["serviceaccount"].(map[string]string)["name"]
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": i.kid})
	claims, _ := json.Marshal(map[string]any{
		"aud": []string{aud}, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:" + k8s["namespace"].(string) + ":" + sa,
		"kubernetes.io": k8s,
	})
	signed := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(claims)
	h := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, i.key, 5, h[:]) // 5: crypto.SHA256
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// otherCACert is a client certificate signed by a CA the chart's NATS
// does not trust.
func otherCACert(t *testing.T) struct{ cert, key string } {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	c := struct{ cert, key string }{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")}
	writeFile(t, c.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, c.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return c
}

// serverLog keeps a NATS server's log lines.
type serverLog struct {
	mu sync.Mutex
	l  []string
}

func (s *serverLog) add(level, format string, v ...any) {
	s.mu.Lock()
	s.l = append(s.l, level+" "+fmt.Sprintf(format, v...))
	s.mu.Unlock()
}
func (s *serverLog) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.l...)
}
func (s *serverLog) String() string             { return strings.Join(s.lines(), "\n") }
func (s *serverLog) Noticef(f string, v ...any) { s.add("[INF]", f, v...) }
func (s *serverLog) Warnf(f string, v ...any)   { s.add("[WRN]", f, v...) }
func (s *serverLog) Fatalf(f string, v ...any)  { s.add("[FTL]", f, v...) }
func (s *serverLog) Errorf(f string, v ...any)  { s.add("[ERR]", f, v...) }
func (s *serverLog) Debugf(f string, v ...any)  { s.add("[DBG]", f, v...) }
func (s *serverLog) Tracef(f string, v ...any)  { s.add("[TRC]", f, v...) }
