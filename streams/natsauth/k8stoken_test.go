package natsauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// es256Issuer signs tokens the way a cluster with a P-256 service-account
// key does.
type es256Issuer struct {
	key *ecdsa.PrivateKey
}

func (i es256Issuer) jwks() []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "ec1",
		"x": base64.RawURLEncoding.EncodeToString(i.key.X.FillBytes(make([]byte, 32))),
		"y": base64.RawURLEncoding.EncodeToString(i.key.Y.FillBytes(make([]byte, 32))),
	}}})
	return b
}

func (i es256Issuer) sign(t testing.TB, claims map[string]any) string {
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "ec1"})
	body, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	h := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, i.key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestVerifier(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := es256Issuer{key: k}
	now := time.Unix(1_800_000_000, 0)
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{
			"aud": "weft-nats", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix(),
			"kubernetes.io": map[string]any{
				"namespace":      "weft",
				"node":           map[string]any{"name": "node-a"},
				"pod":            map[string]any{"name": "weft-collector-x"},
				"serviceaccount": map[string]any{"name": "weft-collector"},
			},
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	fetches := 0
	v := &Verifier{Audience: "weft-nats", Now: func() time.Time { return now },
		Fetch: func(context.Context) ([]byte, error) { fetches++; return iss.jwks(), nil }}
	tests := []struct {
		name  string
		token string
		err   string
	}{
		{"valid", iss.sign(t, claims(nil)), ""},
		{"expired", iss.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Second).Unix() })), "expired"},
		{"not yet valid", iss.sign(t, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"another audience", iss.sign(t, claims(func(c map[string]any) { c["aud"] = []string{"api"} })), "audience"},
		{"no service account", iss.sign(t, claims(func(c map[string]any) { delete(c, "kubernetes.io") })), "no service account"},
		{"altered claims", func() string {
			p := strings.Split(iss.sign(t, claims(nil)), ".")
			other := strings.Split(iss.sign(t, claims(func(c map[string]any) {
				c["kubernetes.io"].(map[string]any)["node"] = map[string]any{"name": "node-b"}
			})), ".")
			return p[0] + "." + other[1] + "." + p[2]
		}(), "does not verify"},
		{"not a JWT", "abc", "not a JWT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			switch {
			case tt.err == "" && err != nil:
				t.Fatal(err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one saying %q", err, tt.err)
			case tt.err == "" && (id != Identity{Namespace: "weft", ServiceAccount: "weft-collector", Pod: "weft-collector-x", Node: "node-a", Expires: now.Add(time.Hour)}):
				t.Fatalf("identity %+v", id)
			}
		})
	}
	if fetches != 1 {
		t.Errorf("keys fetched %d times, want once", fetches)
	}
}
