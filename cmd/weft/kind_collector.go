package main

import "github.com/weftobs/weft/streams/stage"

func collectorKind() stage.Kind {
	return stage.NotImplemented("collector", "eBPF collector of process, TCP and unix-socket events",
		[]stage.DeployMode{stage.DeployDaemonSet, stage.DeployInProcess, stage.DeploySidecar}, true, false)
}
