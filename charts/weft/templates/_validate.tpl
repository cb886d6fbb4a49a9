{{/*
weft.validate checks what values.schema.json cannot: the relations between
stages, and between the topology and the rest of the values. It reports
every problem at once, each naming the stage or value it concerns, so one
`helm install` shows everything to fix.
*/}}
{{- define "weft.validate" -}}
{{- $root := . -}}
{{- $errs := list -}}
{{- $top := .Values.topology -}}
{{- $kinds := include "weft.kinds" . | fromYaml -}}
{{- $reserved := list "nats" "neo4j" "migrate" "inprocess" "topology" "sidecars" "app" -}}
{{- $tk := include "weft.topologyKeys" . | fromYaml -}}
{{- range $k, $_ := $top -}}
{{- if not (has $k $tk.topology) -}}
{{- $errs = append $errs (printf "topology: unknown key %q (known: %s)" $k (join ", " $tk.topology)) -}}
{{- end -}}
{{- end -}}
{{- range $k, $_ := ($top.metadata | default dict) -}}
{{- if not (has $k $tk.metadata) -}}
{{- $errs = append $errs (printf "topology.metadata: unknown key %q (known: %s)" $k (join ", " $tk.metadata)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $st := ($top.streams | default dict) -}}
{{- range $k, $_ := $st -}}
{{- if not (has $k $tk.stream) -}}
{{- $errs = append $errs (printf "topology.streams.%s: unknown key %q (known: %s)" $name $k (join ", " $tk.stream)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $i, $s := ($top.stages | default list) -}}
{{- range $k, $_ := $s -}}
{{- if not (has $k $tk.stage) -}}
{{- $errs = append $errs (printf "topology.stages[%d] (%s): unknown key %q (known: %s)" $i (toString $s.name) $k (join ", " $tk.stage)) -}}
{{- end -}}
{{- end -}}
{{- range $k, $_ := ($s.autoscale | default dict) -}}
{{- if not (has $k $tk.autoscale) -}}
{{- $errs = append $errs (printf "topology.stages[%d] (%s): autoscale: unknown key %q (known: %s)" $i (toString $s.name) $k (join ", " $tk.autoscale)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if ne (toString $top.apiVersion) "weft.dev/v1" -}}
{{- $errs = append $errs (printf "topology.apiVersion %q: want weft.dev/v1" (toString $top.apiVersion)) -}}
{{- end -}}
{{- if ne (toString $top.kind) "Topology" -}}
{{- $errs = append $errs (printf "topology.kind %q: want Topology" (toString $top.kind)) -}}
{{- end -}}
{{- if not ($top.metadata | default dict).name -}}
{{- $errs = append $errs "topology.metadata.name: missing" -}}
{{- end -}}
{{- if not $top.stages -}}
{{- $errs = append $errs "topology.stages: no stages" -}}
{{- end -}}
{{- $names := list -}}
{{- range $s := $top.stages -}}
{{- $names = append $names (toString $s.name) -}}
{{- end -}}
{{- /* DLQ is implicit: weft adds it when the topology does not declare it. */ -}}
{{- $streams := append (keys ($top.streams | default dict)) "DLQ" -}}
{{- $seen := list -}}
{{- range $i, $s := $top.stages -}}
{{- $where := printf "topology.stages[%d] (%s)" $i (toString $s.name) -}}
{{- if has (toString $s.name) $seen -}}
{{- $errs = append $errs (printf "%s: stage name %q is used twice" $where $s.name) -}}
{{- end -}}
{{- $seen = append $seen (toString $s.name) -}}
{{- if has (toString $s.name) $reserved -}}
{{- $errs = append $errs (printf "%s: stage name %q is reserved by the chart (%s)" $where $s.name (join ", " $reserved)) -}}
{{- end -}}
{{- $modes := get $kinds (toString $s.kind) -}}
{{- $mode := include "weft.stageDeploy" (dict "stage" $s) -}}
{{- $allModes := list "inprocess" "daemonset" "deployment" "statefulset" "sidecar" -}}
{{- if not $modes -}}
{{- $errs = append $errs (printf "%s: unknown kind %q (known: %s)" $where (toString $s.kind) (keys $kinds | sortAlpha | join ", ")) -}}
{{- else if not (has $mode $allModes) -}}
{{- $errs = append $errs (printf "%s: deploy %q: want one of %s" $where $mode (join ", " $allModes)) -}}
{{- else if not (has $mode $modes) -}}
{{- $why := "" -}}
{{- if eq (toString $s.kind) "collector" -}}{{- $why = "; a collector needs a node" -}}{{- end -}}
{{- $errs = append $errs (printf "%s: kind %s cannot use deploy: %s (it can use %s%s)" $where $s.kind $mode (join ", " $modes) $why) -}}
{{- end -}}
{{- if eq $mode "sidecar" -}}
{{- $of := toString ($s.sidecarOf | default "") -}}
{{- if not $of -}}
{{- $errs = append $errs (printf "%s: deploy: sidecar needs sidecarOf (a stage name, or app for the user's pods)" $where) -}}
{{- else if and (ne $of "app") (not (has $of $names)) -}}
{{- $errs = append $errs (printf "%s: sidecarOf %q names no stage" $where $of) -}}
{{- else if ne $of "app" -}}
{{- $host := include "weft.stageByName" (dict "root" $root "name" $of) | fromJson -}}
{{- if eq (include "weft.stageDeploy" (dict "stage" $host)) "sidecar" -}}
{{- $errs = append $errs (printf "%s: sidecarOf %q is itself a sidecar; name the stage whose pods it joins" $where $of) -}}
{{- end -}}
{{- if eq (toString $s.kind) "collector" -}}
{{- $errs = append $errs (printf "%s: a collector sidecar joins the user's pods: sidecarOf must be app" $where) -}}
{{- end -}}
{{- end -}}
{{- else if $s.sidecarOf -}}
{{- $errs = append $errs (printf "%s: sidecarOf is only for deploy: sidecar (deploy is %s)" $where $mode) -}}
{{- end -}}
{{- if $s.autoscale -}}
{{- if not (has $mode (list "deployment" "statefulset")) -}}
{{- $errs = append $errs (printf "%s: autoscale needs deploy: deployment or statefulset (deploy is %s)" $where $mode) -}}
{{- else if gt (int ($s.autoscale.min | default 1)) (int ($s.autoscale.max | default 0)) -}}
{{- $errs = append $errs (printf "%s: autoscale.min (%v) is above autoscale.max (%v)" $where ($s.autoscale.min | default 1) ($s.autoscale.max | default 0)) -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $s "replicas") (not (has $mode (list "deployment" "statefulset"))) -}}
{{- $errs = append $errs (printf "%s: replicas has no meaning for deploy: %s (one per node, or one per host pod)" $where $mode) -}}
{{- end -}}
{{- if eq (toString $s.kind) "graph" -}}
{{- if gt (int ($s.replicas | default 1)) 1 -}}
{{- $errs = append $errs (printf "%s: a graph stage runs as one replica (replicas is %v): it applies each CALLS message to its store exactly once with one cursor, and two writers would skip each other's batches" $where $s.replicas) -}}
{{- end -}}
{{- if $s.autoscale -}}
{{- $errs = append $errs (printf "%s: a graph stage cannot autoscale: it runs as one replica" $where) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (toString $s.kind) "correlator") $s.autoscale -}}
{{- /* Replicas past the input's partitions own none (docs/scaling.md). */ -}}
{{- $parts := 1 -}}
{{- range $in := ($s.inputs | default list) -}}
{{- $parts = int ((index ($top.streams | default dict) (toString $in) | default dict).partitions | default 1) -}}
{{- end -}}
{{- if gt (int ($s.autoscale.max | default 0)) $parts -}}
{{- $errs = append $errs (printf "%s: autoscale.max %v is above its input's partitions (%d): a correlator replica past them owns no partition and takes no load, so the HPA would add idle pods; lower autoscale.max to %d or raise the stream's partitions (a migration, docs/scaling.md)" $where $s.autoscale.max $parts $parts) -}}
{{- end -}}
{{- end -}}
{{- range $io := concat ($s.inputs | default list) ($s.outputs | default list) -}}
{{- if not (has (toString $io) $streams) -}}
{{- $errs = append $errs (printf "%s: stream %q is not declared under topology.streams" $where $io) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (toString $s.kind) "otlp") (not (include "weft.otlpEndpoint" (dict "root" $root "stage" $s))) -}}
{{- $errs = append $errs (printf "%s: an otlp stage needs an endpoint: set otlp.endpoint (or config.endpoint on the stage)" $where) -}}
{{- end -}}
{{- end -}}
{{- range $k, $_ := .Values.workloads -}}
{{- if not (has $k $names) -}}
{{- $errs = append $errs (printf "workloads.%s: names no stage of topology %s (stages: %s)" $k $top.metadata.name (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- if include "weft.needsNeo4j" . -}}
{{- $n := .Values.neo4j -}}
{{- if and $n.uri $n.evaluation.enabled -}}
{{- $errs = append $errs "neo4j: set either neo4j.uri (an existing Neo4j) or neo4j.evaluation.enabled, not both" -}}
{{- else if not (or $n.uri $n.evaluation.enabled) -}}
{{- $errs = append $errs "neo4j: a graph stage stores the graph in Neo4j (config.store: neo4j): set neo4j.uri to an existing Neo4j, or neo4j.evaluation.enabled=true to run one for evaluation" -}}
{{- end -}}
{{- if and $n.evaluation.enabled (ne $n.user "neo4j") -}}
{{- $errs = append $errs (printf "neo4j.user %q: the evaluation Neo4j creates only the user neo4j" $n.user) -}}
{{- end -}}
{{- if not (or $n.existingSecret $n.password) -}}
{{- $errs = append $errs "neo4j: no password: set neo4j.existingSecret (a Secret holding it under neo4j.passwordKey) or neo4j.password; the chart has no default password" -}}
{{- else if and $n.password (lt (len $n.password) 8) -}}
{{- $errs = append $errs "neo4j.password: Neo4j requires at least 8 characters" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.nats.auth.existingSecret (include "weft.deploysNats" .) -}}
{{- $errs = append $errs "nats.auth: credentials are for an external NATS (nats.url); the chart's own NATS is reached through its NetworkPolicy" -}}
{{- end -}}
{{- if include "weft.deploysNats" . -}}
{{- range $name, $st := ($top.streams | default dict) -}}
{{- if gt (int ($st.replicas | default 1)) (int $root.Values.nats.replicas) -}}
{{- $errs = append $errs (printf "topology.streams.%s: replicas %v is more than the %v NATS servers the chart runs (nats.replicas)" $name $st.replicas $root.Values.nats.replicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $errs -}}
{{- fail (printf "\n\nweft: %d problem(s) in the values:\n  - %s\n" (len $errs) (join "\n  - " $errs)) -}}
{{- end -}}
{{- end }}
