// Package topologies ships weft's example topologies: local (everything in
// one process, the default of `weft up`), sidecar, daemonset and hybrid.
// They are embedded so the binary carries its default.
package topologies

import "embed"

// FS holds the example topology files.
//
//go:embed *.yaml
var FS embed.FS

// Names are the example topologies.
var Names = []string{"local", "sidecar", "daemonset", "hybrid"}
