package render

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/weftobs/weft/streams/natsauth"
)

// TestOperatorIdentity checks the objects of the operator identity: a
// ServiceAccount no pod runs as, named an operator in nats-auth's
// identities; its own client certificate, signed by the NATS CA; a Role
// allowing exactly a token for it, that certificate and a port-forward to
// the NATS servers; bound to the subjects given; and none of it when
// disabled.
func TestOperatorIdentity(t *testing.T) {
	subjects := []any{map[string]any{"kind": "Group", "name": "sre"}, map[string]any{"kind": "User", "name": "ada@example.com"}}
	tests := []struct {
		name     string
		operator map[string]any
		want     bool
		binding  []rbacv1.Subject
	}{
		{"default", nil, true, nil},
		{"bound", map[string]any{"subjects": subjects}, true, []rbacv1.Subject{
			{Kind: "Group", Name: "sre", APIGroup: "rbac.authorization.k8s.io"},
			{Kind: "User", Name: "ada@example.com", APIGroup: "rbac.authorization.k8s.io"},
		}},
		{"disabled", map[string]any{"enabled": false}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := map[string]any{"nats": map[string]any{"replicas": 3}}
			if tt.operator != nil {
				vals["nats"] = map[string]any{"replicas": 3, "identities": map[string]any{"operator": tt.operator}}
			}
			_, objs := renderCase{name: tt.name, opts: Options{ReleaseName: "weft", Namespace: "weft", Values: vals}}.render(t)

			var ids natsauth.Config
			for _, cm := range ofType[*corev1.ConfigMap](objs) {
				if c, ok := cm.Data["identities.json"]; ok {
					if err := json.Unmarshal([]byte(c), &ids); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := ids.Validate(); err != nil {
				t.Fatalf("identities: %v", err)
			}
			wantOps := []string(nil)
			if tt.want {
				wantOps = []string{"weft-operator"}
			}
			if !slices.Equal(ids.Operators, wantOps) {
				t.Errorf("identities' operators %q, want %q", ids.Operators, wantOps)
			}

			var sa *corev1.ServiceAccount
			for _, s := range ofType[*corev1.ServiceAccount](objs) {
				if s.Name == "weft-operator" {
					sa = s
				}
			}
			var tlsSecret *corev1.Secret
			var ca []byte
			for _, s := range ofType[*corev1.Secret](objs) {
				switch s.Name {
				case "weft-nats-operator-tls":
					tlsSecret = s
				case "weft-nats-ca":
					ca = s.Data["ca.crt"]
				}
			}
			roles := ofType[*rbacv1.Role](objs)
			bindings := ofType[*rbacv1.RoleBinding](objs)
			if !tt.want {
				if sa != nil || tlsSecret != nil || len(roles) > 0 || len(bindings) > 0 {
					t.Errorf("operator disabled, yet rendered: sa=%v secret=%v roles=%d bindings=%d", sa != nil, tlsSecret != nil, len(roles), len(bindings))
				}
				return
			}
			if sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount weft-operator: %+v, want one with no token mounted", sa)
			}
			for _, p := range pods(objs) {
				if p.spec.ServiceAccountName == "weft-operator" {
					t.Errorf("%s runs as the operator", p)
				}
			}

			// The client certificate: the operator's own, of the NATS CA.
			if tlsSecret == nil {
				t.Fatal("no Secret weft-nats-operator-tls")
			}
			if string(tlsSecret.Data["ca.crt"]) != string(ca) {
				t.Error("weft-nats-operator-tls's ca.crt is not the NATS CA")
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(ca)
			blk, _ := pem.Decode(tlsSecret.Data["tls.crt"])
			if blk == nil {
				t.Fatal("weft-nats-operator-tls: no certificate")
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cert.Subject.CommonName != "weft-operator" {
				t.Errorf("operator certificate %q: %v; want weft-operator, a client certificate of the NATS CA", cert.Subject.CommonName, err)
			}

			// The Role: exactly what the operator's commands take.
			if len(roles) != 1 || roles[0].Name != "weft-operator" {
				t.Fatalf("Roles %v, want weft-operator", roles)
			}
			natsPods := []string{"weft-nats-0", "weft-nats-1", "weft-nats-2"}
			wantRules := []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{"weft-operator"}, Verbs: []string{"create"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"weft-nats-operator-tls"}, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: natsPods, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, ResourceNames: natsPods, Verbs: []string{"create"}},
			}
			got, _ := json.Marshal(roles[0].Rules)
			want, _ := json.Marshal(wantRules)
			if string(got) != string(want) {
				t.Errorf("Role weft-operator rules\n got %s\nwant %s", got, want)
			}
			switch {
			case tt.binding == nil && len(bindings) > 0:
				t.Errorf("RoleBindings %v rendered with no subjects given", bindings)
			case tt.binding != nil:
				if len(bindings) != 1 || bindings[0].RoleRef.Name != "weft-operator" || bindings[0].RoleRef.Kind != "Role" {
					t.Fatalf("RoleBindings %+v, want one of Role weft-operator", bindings)
				}
				if !slices.Equal(bindings[0].Subjects, tt.binding) {
					t.Errorf("RoleBinding subjects %+v, want %+v", bindings[0].Subjects, tt.binding)
				}
			}
		})
	}
}
