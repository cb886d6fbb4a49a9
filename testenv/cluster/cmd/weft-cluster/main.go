// Command weft-cluster runs the single-node Kubernetes cluster of package
// testenv/cluster (`task cluster`): it builds Kubernetes once (cached),
// starts the cluster with weft's image from bin/image if `task image`
// made it, prints the KUBECONFIG, and tears everything down on Ctrl-C.
// With -detach it leaves the cluster running; -down tears down a running
// or crashed one; -build only builds.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weftobs/weft/charts/image"
	"github.com/weftobs/weft/testenv/cluster"
)

func main() {
	dir := flag.String("dir", cluster.DefaultDir, "directory for the cluster's state and logs")
	img := flag.String("image", "bin/image", "OCI image layout of weft's image to load, if it exists (task image)")
	build := flag.Bool("build", false, "only build (or find cached) the Kubernetes and CoreDNS binaries, and say where")
	down := flag.Bool("down", false, "tear down the cluster in -dir and exit")
	detach := flag.Bool("detach", false, "leave the cluster running when this command exits (tear it down with -down)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, *img, *build, *down, *detach); err != nil {
		log.Error("weft-cluster", "err", err)
		os.Exit(1)
	}
}

func run(dir, img string, build, down, detach bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch {
	case build:
		ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		b, err := cluster.Build(ctx)
		if err != nil {
			return err
		}
		fmt.Println(b.Dir)
		return nil
	case down:
		return cluster.Down(dir)
	}
	images := map[string]string{}
	if _, err := os.Stat(filepath.Join(img, "index.json")); err == nil {
		ch, err := image.ChartDefaults()
		if err != nil {
			return err
		}
		images[img] = ch.Reference()
	} else {
		fmt.Fprintf(os.Stderr, "no image layout in %s: weft's image is not loaded (task image makes it)\n", img)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	c, err := cluster.Start(sctx, cluster.Options{Dir: dir, Images: images, Log: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
	}})
	if err != nil {
		return err
	}
	fmt.Printf("cluster up (build %s, start %s)\n\n  export KUBECONFIG=%s\n  %s get nodes\n\nlogs: %s\n",
		c.BuildTime.Round(time.Second), c.StartTime.Round(time.Second), c.Kubeconfig, c.Bin.Path("kubectl"), c.LogDir())
	if detach {
		fmt.Printf("left running; tear it down with: go run ./testenv/cluster/cmd/weft-cluster -down -dir %s\n", dir)
		return nil
	}
	fmt.Println("Ctrl-C tears it down")
	<-ctx.Done()
	return c.Stop()
}
