// Command weft-neo4j runs the Neo4j Community of package testenv/neo4j for
// a user (`task neo4j`): it prints the URI, user and password, and runs
// until Ctrl-C; with -build it only builds the launcher (CI does, before
// the tests). Its database and password stay in --dir, so the next run
// reopens the same graph with the same password.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	testneo4j "github.com/weftobs/weft/testenv/neo4j"
)

func main() {
	dir := flag.String("dir", ".weft/neo4j", "directory for the database, its logs and its password")
	port := flag.Int("port", 7687, "Bolt port on 127.0.0.1 (0 for a free one)")
	build := flag.Bool("build", false, "only build (or find cached) the launcher and Neo4j's jars, and say where")
	release := flag.String("release", "lts", "which Neo4j: lts ("+testneo4j.LTS.Version+") or calendar ("+testneo4j.Calendar.Version+", needs Java 21)")
	flag.Parse()
	rel, ok := map[string]testneo4j.Release{"lts": testneo4j.LTS, "calendar": testneo4j.Calendar}[*release]
	if !ok {
		fmt.Fprintf(os.Stderr, "weft-neo4j: -release %q: want lts or calendar\n", *release)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *build {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		l, err := testneo4j.BuildRelease(ctx, rel)
		if err != nil {
			log.Error("weft-neo4j", "err", err)
			os.Exit(1)
		}
		fmt.Println(l.Dir)
		return
	}
	if err := run(*dir, *port, rel); err != nil {
		log.Error("weft-neo4j", "err", err)
		os.Exit(1)
	}
}

func run(dir string, port int, rel testneo4j.Release) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	password, err := password(filepath.Join(dir, "password"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "starting %s in %s (the first run builds it with Maven: a few minutes)\n", rel, dir)
	srv, err := testneo4j.Start(ctx, testneo4j.Options{Dir: dir, Port: port, Password: password, Release: rel})
	if err != nil {
		return err
	}
	fmt.Printf("Neo4j is up (Ctrl-C stops it):\n\n"+
		"  export WEFT_NEO4J_URI=%s WEFT_NEO4J_USER=%s WEFT_NEO4J_PASSWORD=%s\n"+
		"  go run ./cmd/weft migrate up && go run ./cmd/weft up --neo4j-uri %s\n\n"+
		"logs: %s\n", srv.URI, srv.User, srv.Password, srv.URI, strings.Join(srv.Logs(), " "))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return srv.Stop(sctx)
}

// password reads the password kept in path, or makes one and keeps it.
func password(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(data)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the neo4j password: %w", err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	pw := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep the neo4j password: %w", err)
	}
	return pw, nil
}
