package render

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/weftobs/weft/testenv/natstest"
)

// TestNATSRouteTLS runs the chart's three NATS servers in process, each
// on the rendered nats.conf (its route TLS: the servers' certificate of
// the chart's CA, both ends verified), with routes on loopback in place
// of the headless Service's names: the routes form. A fourth server,
// whose certificate is of another CA (and which trusts the chart's),
// routes to them and is refused at the handshake by every one, which
// says so in its log (the refusal is theirs: the intruder trusts them);
// the cluster stays the three.
func TestNATSRouteTLS(t *testing.T) {
	_, objs := renderCase{name: "routes", opts: Options{Values: map[string]any{"nats": map[string]any{"replicas": 3}}}}.render(t)
	pod := layOutNATSPod(t, objs)
	ports := make([]int, 4)
	for i := range ports {
		ports[i] = freeTCPPort(t)
	}
	routes := func(n int) []*url.URL {
		var out []*url.URL
		for i := range n {
			out = append(out, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("localhost:%d", ports[i])})
		}
		return out
	}
	start := func(name string, port int, edit func(*natsserver.Options)) (*natsserver.Server, *routeLog) {
		t.Helper()
		t.Setenv("SERVER_NAME", name)
		opts, err := natsserver.ProcessConfigFile(pod.conf)
		if err != nil {
			t.Fatalf("nats.conf: %v", err)
		}
		if opts.Cluster.TLSConfig == nil {
			t.Fatal("the rendered nats.conf has no route TLS")
		}
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", port
		opts.Routes = routes(3)
		opts.StoreDir, opts.PidFile, opts.NoSigs = t.TempDir(), filepath.Join(t.TempDir(), "nats.pid"), true
		if edit != nil {
			edit(opts)
		}
		s, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		l := &routeLog{}
		s.SetLoggerV2(l, false, false, false)
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		return s, l
	}
	var servers []*natsserver.Server
	var logs []*routeLog
	for i := range 3 {
		s, l := start(fmt.Sprintf("weft-nats-%d", i), ports[i], nil)
		servers, logs = append(servers, s), append(logs, l)
	}
	peers := func(s *natsserver.Server) []string {
		rz, err := s.Routez(nil)
		if err != nil {
			return []string{err.Error()}
		}
		var names []string
		for _, r := range rz.Routes {
			names = append(names, r.RemoteName)
		}
		slices.Sort(names)
		return slices.Compact(names)
	}
	cluster := func() error {
		for i, s := range servers {
			var want []string
			for j := range servers {
				if j != i {
					want = append(want, fmt.Sprintf("weft-nats-%d", j))
				}
			}
			if got := peers(s); !slices.Equal(got, want) {
				return fmt.Errorf("weft-nats-%d routes to %v, want %v; its log:\n%s", i, got, want, logs[i])
			}
		}
		return nil
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, cluster)

	// The intruder: a server certificate of another CA, for the same
	// names; it trusts the chart's CA as well as its own, so the refusal
	// is the cluster's.
	dir := t.TempDir()
	certFile, keyFile, caFile := otherCAServerCert(t, dir)
	chartCA, err := os.ReadFile(filepath.Join(pod.dir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.crt")
	own, _ := os.ReadFile(caFile)
	if err := os.WriteFile(bundle, append(chartCA, own...), 0o600); err != nil {
		t.Fatal(err)
	}
	intruder, ilog := start("intruder", ports[3], func(o *natsserver.Options) {
		tc, err := natsserver.GenTLSConfig(&natsserver.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: bundle, Verify: true, Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		tc.RootCAs = tc.ClientCAs // as nats.conf's cluster tls does: a route is client and server
		o.Cluster.TLSConfig = tc
	})
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for i, l := range logs {
			if !l.has("TLS route handshake error: tls: failed to verify certificate: x509: certificate signed by unknown authority") {
				return fmt.Errorf("weft-nats-%d's log has no route refused for its certificate:\n%s\nintruder's:\n%s", i, l, ilog)
			}
		}
		return nil
	})
	if got := peers(intruder); len(got) != 0 {
		t.Errorf("the intruder routes to %v", got)
	}
	if err := cluster(); err != nil {
		t.Error(err)
	}
	for i, l := range logs {
		for _, line := range l.lines() {
			if strings.Contains(line, "unknown authority") {
				t.Logf("weft-nats-%d: %s", i, line)
				break
			}
		}
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// otherCAServerCert writes a CA of its own and a server and client
// certificate it signs for localhost, as the chart's are for the NATS
// servers' names.
func otherCAServerCert(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft-nats-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "weft-nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	cert, key, ca = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	for f, b := range map[string][]byte{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		ca:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// routeLog keeps a NATS server's log lines.
type routeLog struct {
	mu sync.Mutex
	l  []string
}

func (r *routeLog) add(format string, v ...any) {
	r.mu.Lock()
	r.l = append(r.l, fmt.Sprintf(format, v...))
	r.mu.Unlock()
}

func (r *routeLog) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.l)
}

func (r *routeLog) has(s string) bool {
	return slices.ContainsFunc(r.lines(), func(l string) bool { return strings.Contains(l, s) })
}

func (r *routeLog) String() string             { return strings.Join(r.lines(), "\n") }
func (r *routeLog) Noticef(f string, v ...any) { r.add("[INF] "+f, v...) }
func (r *routeLog) Warnf(f string, v ...any)   { r.add("[WRN] "+f, v...) }
func (r *routeLog) Fatalf(f string, v ...any)  { r.add("[FTL] "+f, v...) }
func (r *routeLog) Errorf(f string, v ...any)  { r.add("[ERR] "+f, v...) }
func (r *routeLog) Debugf(f string, v ...any)  { r.add("[DBG] "+f, v...) }
func (r *routeLog) Tracef(f string, v ...any)  { r.add("[TRC] "+f, v...) }
