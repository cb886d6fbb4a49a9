package kernels

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Distribution is one Debian kernel to fetch: the suites its apt
// configuration lists and the package that names the kernel (a
// metapackage such as linux-image-amd64 is followed to the image it
// depends on).
type Distribution struct {
	Name    string  // the kernel's name in the matrix, e.g. "bookworm"
	Suites  []Suite // the suites of its private sources list
	Package string  // e.g. "linux-image-amd64"
}

// Suite is one suite of a Distribution's sources list.
type Suite struct {
	Name     string // e.g. "bullseye-security"
	Security bool   // from the security archive rather than the main one
}

// The Debian kernels with BTF the collector is tested on.
var (
	Bullseye        = Distribution{"bullseye", []Suite{{"bullseye", false}, {"bullseye-security", true}}, "linux-image-amd64"}
	Bookworm        = Distribution{"bookworm", []Suite{{"bookworm", false}, {"bookworm-updates", false}, {"bookworm-security", true}}, "linux-image-amd64"}
	Trixie          = Distribution{"trixie", []Suite{{"trixie", false}, {"trixie-updates", false}, {"trixie-security", true}}, "linux-image-amd64"}
	TrixieBackports = Distribution{"trixie-backports", []Suite{{"trixie-backports", false}}, "linux-image-amd64"}
)

// Debian is every kernel of the matrix, oldest first.
var Debian = []Distribution{Bullseye, Bookworm, Trixie, TrixieBackports}

// Keyring verifies Debian's archive signatures (package debian-archive-keyring).
const Keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// Kernel is a fetched, unpacked kernel in the cache.
type Kernel struct {
	Name    string `json:"name"`    // the Distribution's name
	Package string `json:"package"` // the image package, e.g. linux-image-6.1.0-40-amd64
	Version string `json:"version"` // its Debian version
	Release string `json:"release"` // its `uname -r`
	Vmlinuz string `json:"vmlinuz"` // path of the bootable image
	Config  string `json:"config"`  // path of its build configuration
}

// FetchOptions tune Fetch; the zero value reads the host's /etc/apt and
// uses the cache.
type FetchOptions struct {
	Mirrors *Mirrors // nil: HostMirrors("/etc/apt")
	Refresh bool     // fetch again even when a kernel is cached
}

// Fetch returns the kernels of dists, downloading and unpacking those not
// yet in cacheDir. A cached kernel is returned without touching the
// network. Each distribution has its own apt state under
// cacheDir/<name>/apt; nothing is installed and the host's apt state is
// only read (for the mirror URIs).
func Fetch(ctx context.Context, cacheDir string, opts FetchOptions, dists ...Distribution) ([]Kernel, error) {
	var out []Kernel
	var mirrors *Mirrors
	for _, d := range dists {
		dir := filepath.Join(cacheDir, d.Name)
		if k, err := cached(dir); err == nil && !opts.Refresh {
			out = append(out, k)
			continue
		}
		if mirrors == nil {
			mirrors = opts.Mirrors
			if mirrors == nil {
				m, err := HostMirrors("/etc/apt")
				if err != nil {
					return out, err
				}
				mirrors = &m
			}
		}
		k, err := fetchOne(ctx, dir, *mirrors, d)
		if err != nil {
			return out, fmt.Errorf("fetch %s kernel: %w", d.Name, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// DefaultCacheDir is $XDG_CACHE_HOME/weft/kernels, or ~/.cache/weft/kernels.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "weft", "kernels"), nil
}

func cached(dir string) (Kernel, error) {
	var k Kernel
	b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if err != nil {
		return k, err
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return k, err
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return k, err
	}
	return k, nil
}

// apt is one distribution's private apt configuration.
type apt struct{ dir string }

func (a apt) opts() []string {
	return []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(a.dir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::Etc::Preferences=/dev/null",
		"-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::State::Status=/dev/null",
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "APT::Architecture=amd64",
		"-o", "APT::Architectures=amd64",
		"-o", "Acquire::Languages=none",
		// The host's configuration may add index targets (appstream,
		// Contents); a kernel needs only Packages.
		"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
		// The private directories belong to whoever runs this, not _apt.
		"-o", "APT::Sandbox::User=" + sandboxUser(),
		"-q",
	}
}

func sandboxUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	return "" // apt only drops privileges when root
}

func (a apt) run(ctx context.Context, workDir, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, append(a.opts(), args...)...)
	cmd.Dir = workDir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func fetchOne(ctx context.Context, dir string, m Mirrors, d Distribution) (Kernel, error) {
	a := apt{dir: filepath.Join(dir, "apt")}
	for _, sub := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.dir, sub), 0o755); err != nil {
			return Kernel{}, err
		}
	}
	var list strings.Builder
	for _, s := range d.Suites {
		uri := m.Archive
		if s.Security {
			uri = m.Security
		}
		if uri == "" {
			continue // the host knows no security mirror: the main suite still has a kernel
		}
		fmt.Fprintf(&list, "deb [signed-by=%s] %s %s main\n", Keyring, uri, s.Name)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "sources.list"), []byte(list.String()), 0o644); err != nil {
		return Kernel{}, err
	}
	if _, err := a.run(ctx, dir, "apt-get", "update"); err != nil {
		return Kernel{}, err
	}
	pkg, version, parts, err := resolveImage(ctx, a, d.Package)
	if err != nil {
		return Kernel{}, err
	}

	tmp, err := os.MkdirTemp(dir, "download-")
	if err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(tmp)
	if _, err := a.run(ctx, tmp, "apt-get", append([]string{"download"}, parts...)...); err != nil {
		return Kernel{}, err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != len(parts) {
		return Kernel{}, fmt.Errorf("apt-get download %v: got %d packages", parts, len(debs))
	}
	root := filepath.Join(tmp, "root")
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			return Kernel{}, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, out)
		}
	}
	// Up to Debian 13 the image is /boot/vmlinuz-<release>; later
	// packages put it in /usr/lib/modules/<release>/vmlinuz.
	var release, image, config string
	if m, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*")); len(m) == 1 {
		release = strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")
		image, config = m[0], filepath.Join(root, "boot", "config-"+release)
	} else if m, _ := filepath.Glob(filepath.Join(root, "usr/lib/modules/*/vmlinuz")); len(m) == 1 {
		release = filepath.Base(filepath.Dir(m[0]))
		image, config = m[0], filepath.Join(filepath.Dir(m[0]), "config")
	} else {
		return Kernel{}, fmt.Errorf("%s %s: no kernel image in %v", pkg, version, parts)
	}
	kdir := filepath.Join(dir, release)
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return Kernel{}, err
	}
	k := Kernel{
		Name: d.Name, Package: pkg, Version: version, Release: release,
		Vmlinuz: filepath.Join(kdir, "vmlinuz"),
		Config:  filepath.Join(kdir, "config"),
	}
	if err := os.Rename(image, k.Vmlinuz); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(config, k.Config); err != nil {
		return Kernel{}, fmt.Errorf("%s %s: no build configuration: %w", pkg, version, err)
	}
	if b, err := os.ReadFile(k.Config); err != nil || !bytes.Contains(b, []byte("\nCONFIG_DEBUG_INFO_BTF=y\n")) {
		return Kernel{}, fmt.Errorf("%s %s is built without BTF (CONFIG_DEBUG_INFO_BTF)", pkg, version)
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), b, 0o644); err != nil {
		return Kernel{}, err
	}
	return k, nil
}

// resolveImage follows a metapackage (linux-image-amd64) to the image
// package it depends on, and returns that package, its candidate version
// and the packages to download (name=version) for the kernel image and
// its configuration: the image itself, and from Debian 14's packaging on
// the linux-binary-* and linux-base-* packages it depends on (but never
// the modules, which a VM booted from an initramfs does not load).
func resolveImage(ctx context.Context, a apt, pkg string) (name, version string, parts []string, err error) {
	for range 3 {
		out, err := a.run(ctx, a.dir, "apt-cache", "show", "--no-all-versions", pkg)
		if err != nil {
			return "", "", nil, err
		}
		f := controlFields(out)
		if f["Version"] == "" {
			return "", "", nil, fmt.Errorf("apt-cache show %s: no version", pkg)
		}
		// A metapackage depends on an image ("linux-image-amd64: Depends:
		// linux-image-6.1.0-40-amd64 (= …)"); an image ships the kernel,
		// or depends on the packages that do.
		image := ""
		parts = []string{pkg + "=" + f["Version"]}
		for _, dep := range strings.Split(f["Depends"], ",") {
			name, constraint, _ := strings.Cut(strings.TrimSpace(dep), " ")
			switch {
			case strings.HasPrefix(name, "linux-image-") && image == "":
				image = name
			case strings.HasPrefix(name, "linux-binary-") || strings.HasPrefix(name, "linux-base-") && name != "linux-base-amd64":
				v, ok := strings.CutPrefix(strings.Trim(constraint, "()"), "= ")
				if !ok {
					return "", "", nil, fmt.Errorf("%s depends on %s without an exact version", pkg, dep)
				}
				parts = append(parts, name+"="+v)
			}
		}
		if image == "" {
			return pkg, f["Version"], parts, nil
		}
		pkg = image
	}
	return "", "", nil, fmt.Errorf("%s: too many metapackages", pkg)
}

// controlFields parses the first paragraph of Debian control data.
func controlFields(b []byte) map[string]string {
	f := map[string]string{}
	para, _, _ := strings.Cut(string(b), "\n\n")
	for _, l := range strings.Split(para, "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, " ") {
			f[k] = v
		}
	}
	return f
}
