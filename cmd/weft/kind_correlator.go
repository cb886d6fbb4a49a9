package main

import (
	"github.com/weftobs/weft/correlator/correlate"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/streams/stage"
)

func correlatorKind() stage.Kind { return correlate.Kind() }

func graphKind() stage.Kind { return graphstage.Kind() }
