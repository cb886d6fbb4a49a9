// Command weft-image writes weft's container image as an OCI image layout,
// without a container engine: go run ./charts/image/cmd/weft-image -o DIR.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftobs/weft/charts/image"
)

func main() {
	out := flag.String("o", "bin/image", "directory to write the OCI image layout to (must not hold another)")
	binary := flag.String("binary", "", "a static linux weft binary (default: build one with the chart's appVersion)")
	arch := flag.String("arch", "amd64", "GOARCH of the image")
	root := flag.String("root", ".", "repository root, for LICENSE and NOTICE")
	flag.Parse()
	if err := run(*out, *binary, *arch, *root); err != nil {
		fmt.Fprintln(os.Stderr, "weft-image:", err)
		os.Exit(1)
	}
}

func run(out, binary, arch, root string) error {
	ch, err := image.ChartDefaults()
	if err != nil {
		return err
	}
	if binary == "" {
		tmp, err := os.MkdirTemp("", "weft-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		binary = filepath.Join(tmp, "weft")
		if err := image.BuildBinary(binary, ch.AppVersion, arch); err != nil {
			return err
		}
	}
	docs := map[string][]byte{}
	for _, name := range []string{"LICENSE", "NOTICE"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		docs[name] = b
	}
	digest, err := image.Write(out, image.Options{Binary: binary, Arch: arch, Docs: docs})
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s@%s\n", out, ch.Reference(), digest)
	return nil
}
