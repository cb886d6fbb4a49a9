package kernels

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Mirrors are the Debian archive URIs the host's apt configuration uses:
// the main archive and the security archive. Fetch substitutes its own
// suites into them, so a machine behind its own mirror or proxy fetches
// kernels from there.
type Mirrors struct {
	Archive  string // e.g. the URI the host's "bookworm" suite comes from
	Security string // the URI of the host's "<codename>-security" suite; may be empty
}

// debianSuites are the suite names (before any "-updates", "-security",
// "-backports") that mark an apt source as Debian's own archive, so other
// vendors' sources in the same configuration are never used.
var debianSuites = map[string]bool{
	"buster": true, "bullseye": true, "bookworm": true, "trixie": true,
	"forky": true, "duke": true, "sid": true,
	"oldoldstable": true, "oldstable": true, "stable": true, "testing": true, "unstable": true,
}

// aptSource is one (URI, suite) of an apt source entry.
type aptSource struct{ uri, suite string }

// HostMirrors reads the host's apt sources (sources.list, and *.list and
// *.sources under sources.list.d below etcApt, normally /etc/apt) and
// returns the Debian archive and security URIs found there.
func HostMirrors(etcApt string) (Mirrors, error) {
	var srcs []aptSource
	if b, err := os.ReadFile(filepath.Join(etcApt, "sources.list")); err == nil {
		srcs = append(srcs, parseOneLine(b)...)
	}
	for _, pat := range []string{"*.list", "*.sources"} {
		files, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", pat))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return Mirrors{}, fmt.Errorf("read apt sources: %w", err)
			}
			if strings.HasSuffix(f, ".sources") {
				srcs = append(srcs, parseDeb822(b)...)
			} else {
				srcs = append(srcs, parseOneLine(b)...)
			}
		}
	}
	var m Mirrors
	for _, s := range srcs {
		base, kind, _ := strings.Cut(s.suite, "-")
		if strings.HasSuffix(s.suite, "/updates") { // the old security layout
			base, kind = strings.TrimSuffix(s.suite, "/updates"), "security"
		}
		if !debianSuites[base] {
			continue
		}
		switch kind {
		case "security":
			if m.Security == "" {
				m.Security = s.uri
			}
		case "", "updates", "backports", "proposed-updates":
			if m.Archive == "" {
				m.Archive = s.uri
			}
		}
	}
	if m.Archive == "" {
		return m, errors.New("no Debian archive in the host's apt sources under " + etcApt)
	}
	return m, nil
}

// parseOneLine reads the one-line format: "deb [options] uri suite components...".
func parseOneLine(b []byte) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 {
			out = append(out, aptSource{uri: strings.TrimSuffix(f[0], "/"), suite: f[1]})
		}
	}
	return out
}

// parseDeb822 reads the deb822 format: paragraphs of "Field: value" with
// Types, URIs, Suites and Enabled.
func parseDeb822(b []byte) []aptSource {
	var out []aptSource
	for _, para := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n\n") {
		fields := map[string]string{}
		var last string
		for _, l := range strings.Split(para, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") || strings.TrimSpace(l) == "" {
				continue
			}
			if (l[0] == ' ' || l[0] == '\t') && last != "" {
				fields[last] += " " + strings.TrimSpace(l)
				continue
			}
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
		if strings.EqualFold(fields["enabled"], "no") || !slices.Contains(strings.Fields(fields["types"]), "deb") {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			for _, suite := range strings.Fields(fields["suites"]) {
				out = append(out, aptSource{uri: strings.TrimSuffix(uri, "/"), suite: suite})
			}
		}
	}
	return out
}
