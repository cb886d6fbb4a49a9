package natsauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
)

// Identity is what a verified Kubernetes service-account token says of
// the pod that presents it. Node comes from the token the kubelet asked
// for the pod (Kubernetes 1.30 and later write it), not from the pod.
type Identity struct {
	Namespace      string
	ServiceAccount string
	Pod            string
	Node           string
	Expires        time.Time
}

// KeyFetcher returns the service-account issuer's public keys as a JWKS
// document (the API server's /openid/v1/jwks).
type KeyFetcher func(ctx context.Context) ([]byte, error)

// Verifier checks projected service-account tokens locally, against the
// cluster's service-account issuer keys: no API call per connection (a
// NATS restart reconnects every collector at once), and NATS keeps
// admitting stages while the API server is away. A key it does not know
// makes it fetch the keys again (the issuer rotated them), at most once a
// minute.
type Verifier struct {
	Audience string
	Fetch    KeyFetcher
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	keys    map[string]crypto.PublicKey
	fetched time.Time
}

// Verify checks token's signature, audience, and validity period, and
// returns who it names.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Identity{}, errors.New("token is not a JWT")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return Identity{}, fmt.Errorf("token header: %w", err)
	}
	key, err := v.key(ctx, hdr.Kid)
	if err != nil {
		return Identity{}, err
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return Identity{}, fmt.Errorf("token signature: %w", err)
	}
	if err := verifySig(hdr.Alg, key, []byte(parts[0]+"."+parts[1]), sig); err != nil {
		return Identity{}, err
	}
	var c struct {
		Aud audience `json:"aud"`
		Exp int64    `json:"exp"`
		Nbf int64    `json:"nbf"`
		K8s struct {
			Namespace string `json:"namespace"`
			Node      struct {
				Name string `json:"name"`
			} `json:"node"`
			Pod struct {
				Name string `json:"name"`
			} `json:"pod"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return Identity{}, fmt.Errorf("token claims: %w", err)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	switch {
	case !slices.Contains(c.Aud, v.Audience):
		return Identity{}, fmt.Errorf("token is not for audience %q", v.Audience)
	case c.Exp == 0 || now.Unix() >= c.Exp:
		return Identity{}, errors.New("token expired")
	case c.Nbf != 0 && now.Unix() < c.Nbf:
		return Identity{}, errors.New("token not valid yet")
	case c.K8s.Namespace == "" || c.K8s.ServiceAccount.Name == "":
		return Identity{}, errors.New("token names no service account")
	}
	return Identity{
		Namespace: c.K8s.Namespace, ServiceAccount: c.K8s.ServiceAccount.Name,
		Pod: c.K8s.Pod.Name, Node: c.K8s.Node.Name, Expires: time.Unix(c.Exp, 0),
	}, nil
}

func (v *Verifier) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	if !v.fetched.IsZero() && time.Since(v.fetched) < time.Minute {
		return nil, fmt.Errorf("token signed by unknown key %q", kid)
	}
	v.fetched = time.Now()
	doc, err := v.Fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("service-account issuer keys: %w", err)
	}
	keys, err := ParseJWKS(doc)
	if err != nil {
		return nil, err
	}
	v.keys = keys
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("token signed by unknown key %q", kid)
}

// ParseJWKS reads a JWKS document's RSA and P-256 keys, by key id.
func ParseJWKS(doc []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Kid, N, E, Crv, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for i, k := range set.Keys {
		switch {
		case k.Kty == "RSA":
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err := errors.Join(err1, err2); err != nil || len(e) > 4 {
				return nil, fmt.Errorf("jwks key %d (%s): bad RSA key", i, k.Kid)
			}
			keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case k.Kty == "EC" && k.Crv == "P-256":
			x, err1 := base64.RawURLEncoding.DecodeString(k.X)
			y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("jwks key %d (%s): bad EC key", i, k.Kid)
			}
			keys[k.Kid] = &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no RSA or P-256 key")
	}
	return keys, nil
}

func verifySig(alg string, key crypto.PublicKey, signed, sig []byte) error {
	h := sha256.Sum256(signed)
	switch k := key.(type) {
	case *rsa.PublicKey:
		if alg != "RS256" {
			break
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig); err != nil {
			return errors.New("token signature does not verify")
		}
		return nil
	case *ecdsa.PublicKey:
		if alg != "ES256" {
			break
		}
		if len(sig) != 64 || !ecdsa.Verify(k, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return errors.New("token signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("token algorithm %q does not match its key", alg)
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// audience is a JWT aud claim: a string or a list of them.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}
