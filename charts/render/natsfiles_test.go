package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftobs/weft/streams/natsauth"
)

// natsPod is what a NATS pod of the chart has under /etc/nats, laid out
// in a temporary directory: nats.conf (with /etc/nats/ pointing there),
// tls/ from the rendered Secret, auth/ as `weft nats-auth keygen` writes
// it at pod start, and identities/identities.json from its ConfigMap.
type natsPod struct {
	dir  string
	conf string // path of nats.conf
}

func layOutNATSPod(t *testing.T, objs []object) natsPod {
	t.Helper()
	dir := t.TempDir()
	var conf string
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, cm := range ofType[*corev1.ConfigMap](objs) {
		if c, ok := cm.Data["nats.conf"]; ok {
			conf = c
		}
		if c, ok := cm.Data["identities.json"]; ok {
			write("identities/identities.json", []byte(c))
		}
	}
	if conf == "" {
		t.Fatal("no nats.conf rendered")
	}
	for _, s := range ofType[*corev1.Secret](objs) {
		if strings.HasSuffix(s.Name, "-nats-tls") {
			for _, k := range []string{"ca.crt", "server.crt", "server.key"} {
				write("tls/"+k, s.Data[k])
			}
		}
	}
	if err := natsauth.Keygen(filepath.Join(dir, "auth")); err != nil {
		t.Fatal(err)
	}
	write("nats.conf", []byte(strings.ReplaceAll(conf, "/etc/nats/", dir+"/")))
	return natsPod{dir: dir, conf: filepath.Join(dir, "nats.conf")}
}
