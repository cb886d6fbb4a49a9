package main

import (
	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/stage"
)

// otlpKind is the otlp stage kind: calls as spans and edge metrics,
// process events as logs, to an OTLP backend.
func otlpKind() stage.Kind { return otlp.Kind() }
