package neo4j

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The launcher's sources are embedded, so Build works from any directory
// (go test runs in each package's own, `go run` in the user's) and its
// cache key is the sources themselves.
//
//go:embed pom.xml src
var sources embed.FS

// Launcher is a built launcher: what `java` needs to run it.
type Launcher struct {
	// Dir is the cache directory it was built in.
	Dir string
	// Classpath is its classes directory and every jar of Neo4j.
	Classpath string
	// Java is the java binary that runs this release (see Release.Java).
	Java string
}

// Release is a Neo4j Community release the launcher can be built against,
// with the Java it needs.
type Release struct {
	// Version is org.neo4j:neo4j's version.
	Version string
	// Java is the lowest Java feature release it runs on.
	Java int
}

// LTS is the release weft's tests and `task neo4j` run by default: the
// 5.26 long-term-support line.
var LTS = Release{Version: "5.26.19", Java: 17}

// Calendar is the newest calendar release tested: Neo4j's releases after
// 5.26 are named by year and month, and need Java 21.
var Calendar = Release{Version: "2026.08.1", Java: 21}

func (r Release) String() string { return "Neo4j " + r.Version }

// CacheDir is where Build keeps launchers: $WEFT_CACHE_DIR/neo4j if set,
// else weft/neo4j under the user's cache directory (~/.cache).
func CacheDir() (string, error) {
	if d := os.Getenv("WEFT_CACHE_DIR"); d != "" {
		return filepath.Join(d, "neo4j"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory for the neo4j launcher (set WEFT_CACHE_DIR): %w", err)
	}
	return filepath.Join(d, "weft", "neo4j"), nil
}

// Build compiles the launcher and resolves Neo4j's jars with Maven, once
// per version of its sources: the result is cached under CacheDir, keyed
// by a hash of the sources, and Maven keeps the jars in its own local
// repository. Test binaries of several packages may call it at once; a
// lock file makes one build and the others wait for it. The first build
// downloads Neo4j (about 250 MB); later ones take no time.
func Build(ctx context.Context) (*Launcher, error) { return BuildRelease(ctx, LTS) }

// BuildRelease is Build for release r, compiled and run with a JDK of
// r.Java or later (see FindJava).
func BuildRelease(ctx context.Context, r Release) (*Launcher, error) {
	javaHome, err := FindJava(r.Java)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	key, err := sourceKey()
	if err != nil {
		return nil, err
	}
	if r != LTS {
		key += "-" + r.Version
	}
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "launcher-"+key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the neo4j launcher cache %s: %w", dir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	java := filepath.Join(javaHome, "bin", "java")
	if l, err := cached(dir, java); err == nil {
		return l, nil
	}
	if err := build(ctx, dir, r, javaHome); err != nil {
		return nil, err
	}
	return cached(dir, java)
}

// sourceKey hashes the embedded sources, names and contents.
func sourceKey() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(sources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := sources.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash the neo4j launcher sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// cached returns the launcher built in dir, if it is complete and every
// jar it names is still in Maven's repository.
func cached(dir, java string) (*Launcher, error) {
	data, err := os.ReadFile(filepath.Join(dir, "out", "classpath.txt"))
	if err != nil {
		return nil, err
	}
	classes := filepath.Join(dir, "out", "classes")
	if _, err := os.Stat(filepath.Join(classes, "weft", "testenv", "neo4j", "Launcher.class")); err != nil {
		return nil, err
	}
	jars := strings.Split(strings.TrimSpace(string(data)), string(os.PathListSeparator))
	for _, j := range jars {
		if _, err := os.Stat(j); err != nil {
			return nil, fmt.Errorf("jar %s of the cached launcher: %w", j, err)
		}
	}
	return &Launcher{Dir: dir, Java: java, Classpath: classes + string(os.PathListSeparator) + strings.Join(jars, string(os.PathListSeparator))}, nil
}

// build writes the sources into dir/src and runs Maven there.
func build(ctx context.Context, dir string, r Release, javaHome string) error {
	srcDir := filepath.Join(dir, "src")
	_ = os.RemoveAll(srcDir)
	_ = os.RemoveAll(filepath.Join(dir, "out"))
	err := fs.WalkDir(sources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(srcDir, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := sources.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		return fmt.Errorf("write the neo4j launcher sources into %s: %w", srcDir, err)
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return fmt.Errorf("build the neo4j launcher: Maven (mvn) is needed, with Java 17 or later: %w", err)
	}
	cmd := exec.CommandContext(ctx, mvn, "-B", "-q", "-f", filepath.Join(srcDir, "pom.xml"),
		"-Dweft.out="+filepath.Join(dir, "out"), "-Dneo4j.version="+r.Version,
		"-Dmaven.compiler.release="+strconv.Itoa(r.Java), "compile", "dependency:build-classpath")
	cmd.Env = append(os.Environ(), "JAVA_HOME="+javaHome)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build the neo4j launcher for %s (%s in %s): %w\n%s", r, strings.Join(cmd.Args, " "), srcDir, err, tail(out.String(), 4000))
	}
	return nil
}

// lockFile takes an exclusive flock on path, waiting for ctx.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { _ = f.Close() }, nil
	case <-ctx.Done():
		// Closing the file does not end a blocked flock; the goroutine
		// ends when the holder unlocks, and the lock dies with the file.
		go func() { <-done; _ = f.Close() }()
		return nil, fmt.Errorf("wait for lock %s: %w", path, context.Cause(ctx))
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
