package main

import (
	"github.com/weftobs/weft/collectors/collector"
	"github.com/weftobs/weft/streams/stage"
)

// collectorKind is the eBPF collector (collectors/collector).
func collectorKind() stage.Kind { return collector.Kind() }
