package natsauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// BenchmarkPublish is what zero trust costs a collector's publish path:
// the same core publishes (4 KiB, a batch's size) to a server with no TLS
// and no authorization (the baseline, in the same run) and to one with
// mutual TLS and a callout user limited to weft.events.<node>.>.
func BenchmarkPublish(b *testing.B) {
	payload := make([]byte, 4096)
	run := func(b *testing.B, nc *nats.Conn) {
		var refused error
		nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused = err })
		b.SetBytes(int64(len(payload)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := nc.Publish("weft.events.node-a.tcp", payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := nc.LastError(); err != nil || refused != nil {
			b.Fatalf("publishes refused: %v %v", err, refused)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("plain", func(b *testing.B) {
		s := benchServer(b, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		run(b, nc)
	})
	b.Run("mtls+callout", func(b *testing.B) {
		ca, srvCert, cliCert := benchCerts(b)
		issuer, _ := nkeys.CreateAccount()
		ipub, _ := issuer.PublicKey()
		sopts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: ca, ClientAuth: tls.RequireAndVerifyClientCert}, TLS: true, TLSVerify: true,
			Users:       []*server.User{{Username: "auth", Password: "pw"}},
			AuthCallout: &server.AuthCallout{Issuer: ipub, AuthUsers: []string{"auth"}},
		}
		s := benchServer(b, sopts)
		tlsCli := &tls.Config{RootCAs: ca, Certificates: []tls.Certificate{cliCert}, ServerName: "localhost"}
		anc, err := nats.Connect(s.ClientURL(), nats.Secure(tlsCli), nats.UserInfo("auth", "pw"))
		if err != nil {
			b.Fatal(err)
		}
		defer anc.Close()
		top := testTopology(b)
		c := &Callout{Config: Config{Namespace: "weft", Audience: "weft-nats", Account: "$G", ServiceAccounts: map[string][]string{"weft-collector": {"collector"}}},
			Topology: top, Issuer: issuer, Verifier: benchVerifier(b)}
		if _, err := c.Serve(anc); err != nil {
			b.Fatal(err)
		}
		nc, err := nats.Connect(s.ClientURL(), nats.Secure(tlsCli), nats.Token(benchToken))
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		run(b, nc)
	})
}

func benchServer(b *testing.B, o *server.Options) *server.Server {
	s, err := server.NewServer(o)
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("server not ready")
	}
	return s
}

func benchCerts(b *testing.B) (*x509.CertPool, tls.Certificate, tls.Certificate) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	leaf := func(n int64) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			b.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	return pool, leaf(2), leaf(3)
}

var benchToken string

func benchVerifier(b *testing.B) *Verifier {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := es256Issuer{key: k}
	benchToken = iss.sign(nil, map[string]any{"aud": "weft-nats", "exp": time.Now().Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": "weft", "node": map[string]any{"name": "node-a"}, "serviceaccount": map[string]any{"name": "weft-collector"}}})
	return &Verifier{Audience: "weft-nats", Fetch: func(context.Context) ([]byte, error) { return iss.jwks(), nil }}
}
