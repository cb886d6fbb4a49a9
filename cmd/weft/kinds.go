package main

import (
	"github.com/weftobs/weft/collectors/synthetic"
	"github.com/weftobs/weft/exporters/sink"
	"github.com/weftobs/weft/streams/stage"
)

// registry is every stage kind this build has. Each kind's file
// (kind_*.go) says where it comes from.
func registry() *stage.Registry {
	return stage.NewRegistry(
		synthetic.Kind(),
		sink.Kind(),
		collectorKind(),
		correlatorKind(),
		graphKind(),
		otlpKind(),
	)
}
