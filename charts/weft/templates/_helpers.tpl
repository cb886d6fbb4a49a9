{{/*
weft.init sets .Values.topology, the one place helpers read the topology
from: from topologyFile (a document as text, `--set-file`), else the
values' topology, else the chosen layout. Every template includes it first
(it is idempotent). The topology is not defaulted in values.yaml because
Helm merges maps: a user's topology would inherit the default's streams.
*/}}
{{- define "weft.init" -}}
{{- if .Values.topologyFile -}}
{{- $doc := .Values.topologyFile | fromYaml -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "topologyFile: not YAML: %s" $doc.Error) -}}
{{- end -}}
{{- if and .Values.topology (ne (toJson .Values.topology) (toJson $doc)) -}}
{{- fail "set topologyFile or topology, not both" -}}
{{- end -}}
{{- $_ := set .Values "topology" $doc -}}
{{- else if not .Values.topology -}}
{{- $text := .Files.Get (printf "files/topologies/%s.yaml" .Values.layout) -}}
{{- if not $text -}}
{{- fail (printf "layout %q: no such layout in the chart (files/topologies/)" .Values.layout) -}}
{{- end -}}
{{- $_ := set .Values "topology" (include "weft.fitLayout" (dict "root" . "top" ($text | fromYaml)) | fromJson) -}}
{{- end -}}
{{- end }}

{{/*
weft.fitLayout: (dict "root" $ "top" LAYOUT) → the layout fitted to the
values, as JSON, so that an install with no values works: its graph stages
keep the graph in Neo4j when Neo4j is set (neo4j.uri or
neo4j.evaluation.enabled) and in the embedded store otherwise, its
otlp stages are left out while they have no endpoint (otlp.endpoint), and
its streams have no more replicas than the chart's NATS has servers
(nats.replicas: 1 on a one-node cluster). A topology or topologyFile is
the user's and is taken as it is. What was changed is noted in the
ConfigMap (weft.topologyText).
*/}}
{{- define "weft.fitLayout" -}}
{{- $root := .root -}}
{{- $top := .top -}}
{{- $store := "embedded" -}}
{{- if or $root.Values.neo4j.uri $root.Values.neo4j.evaluation.enabled -}}{{- $store = "neo4j" -}}{{- end -}}
{{- $stages := list -}}
{{- $graphs := list -}}
{{- $dropped := list -}}
{{- range $s := ($top.stages | default list) -}}
{{- if and (eq (toString $s.kind) "otlp") (not (include "weft.otlpEndpoint" (dict "root" $root "stage" $s))) -}}
{{- $dropped = append $dropped (toString $s.name) -}}
{{- else -}}
{{- if eq (toString $s.kind) "graph" -}}
{{- $cfg := deepCopy ($s.config | default dict) -}}
{{- if ne (toString (get $cfg "store")) $store -}}
{{- $graphs = append $graphs (toString $s.name) -}}
{{- end -}}
{{- $_ := set $cfg "store" $store -}}
{{- $_ := set $s "config" $cfg -}}
{{- end -}}
{{- $stages = append $stages $s -}}
{{- end -}}
{{- end -}}
{{- $_ := set $top "stages" $stages -}}
{{- $fewer := list -}}
{{- $servers := int $root.Values.nats.replicas -}}
{{- if not $root.Values.nats.url -}}
{{- range $name, $st := ($top.streams | default dict) -}}
{{- if gt (int ($st.replicas | default 1)) $servers -}}
{{- $_ := set $st "replicas" $servers -}}
{{- $fewer = append $fewer $name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $notes := list -}}
{{- if $fewer -}}
{{- $notes = append $notes (printf "stream(s) %s have replicas: %d, as many as the chart's NATS servers (nats.replicas)" (join ", " $fewer) $servers) -}}
{{- end -}}
{{- if $graphs -}}
{{- if eq $store "neo4j" -}}
{{- $notes = append $notes (printf "graph stage(s) %s store the graph in Neo4j (neo4j.uri or neo4j.evaluation.enabled is set)" (join ", " $graphs)) -}}
{{- else -}}
{{- $notes = append $notes (printf "graph stage(s) %s keep the graph in the embedded store (set neo4j.uri, or neo4j.evaluation.enabled, for Neo4j)" (join ", " $graphs)) -}}
{{- end -}}
{{- end -}}
{{- if $dropped -}}
{{- $notes = append $notes (printf "otlp stage(s) %s left out: no endpoint (set otlp.endpoint)" (join ", " $dropped)) -}}
{{- end -}}
{{- $_ := set $root.Values "layoutNotes" $notes -}}
{{- toJson $top -}}
{{- end }}

{{/*
weft.topologyText is the document the ConfigMap carries: the user's file or
the layout file verbatim (so line numbers in weft's messages match the
file the user knows), or the values' topology.
*/}}
{{- define "weft.topologyText" -}}
{{- $layout := .Files.Get (printf "files/topologies/%s.yaml" .Values.layout) -}}
{{- if .Values.topologyFile -}}
{{- .Values.topologyFile -}}
{{- else if and $layout (eq (toJson ($layout | fromYaml)) (toJson .Values.topology)) -}}
{{- $layout -}}
{{- else if .Values.layoutNotes -}}
# Layout {{ .Values.layout }} (the chart's files/topologies/{{ .Values.layout }}.yaml), fitted to the
# chart's values:
{{- range .Values.layoutNotes }}
#   - {{ . }}
{{- end }}
{{ toYaml .Values.topology -}}
{{- else -}}
{{- toYaml .Values.topology -}}
{{- end -}}
{{- end }}

{{/*
weft.topologyKeys are the keys of a topology document, as streams/topology
decodes them (charts/render tests keep them in step). The chart checks
them itself because a topologyFile is text the schema cannot see into.
*/}}
{{- define "weft.topologyKeys" -}}
topology: [apiVersion, kind, metadata, streams, stages]
metadata: [name, labels]
stream: [subjects, maxAge, maxBytes, maxMsgs, replicas, storage, duplicates, compression, onDrift, partitions]
stage: [name, kind, deploy, replicas, inputs, outputs, sidecarOf, autoscale, config]
autoscale: [min, max, targetCPUPercent]
{{- end }}

{{/*
Names and labels.
*/}}
{{- define "weft.name" -}}weft{{- end }}

{{- define "weft.fullname" -}}
{{- if contains "weft" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-weft" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* weft.componentName: (dict "root" $ "name" COMPONENT) → fullname-COMPONENT. */}}
{{- define "weft.componentName" -}}
{{- printf "%s-%s" (include "weft.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "weft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* weft.selectorLabels: (dict "root" $ "component" NAME) */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* weft.releaseSelector selects every pod of the release. */}}
{{- define "weft.releaseSelector" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weft.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
Stage kinds and the deploy modes each can use; the first is the kind's
default when a stage names none. This is the stage.Kind.Deploy of every
kind cmd/weft registers (render.Kinds exposes it so a test there can keep
them equal): a collector needs a node, so it is a DaemonSet, runs in
process, or joins an application's pods; the graph writer and the
correlator are never one per node.
*/}}
{{- define "weft.kinds" -}}
collector: [daemonset, inprocess, sidecar]
correlator: [inprocess, deployment, statefulset]
graph: [inprocess, deployment, statefulset]
otlp: [deployment, inprocess, sidecar, daemonset]
synthetic: [inprocess, deployment, daemonset]
sink: [inprocess, deployment]
{{- end }}

{{/* weft.stageDeploy: a stage → its deploy mode, defaulted by kind. */}}
{{- define "weft.stageDeploy" -}}
{{- $kinds := include "weft.kinds" . | fromYaml -}}
{{- if .stage.deploy -}}
{{- .stage.deploy -}}
{{- else -}}
{{- $modes := get $kinds (toString .stage.kind) | default (list "deployment") -}}
{{- first $modes -}}
{{- end -}}
{{- end }}

{{/* weft.stageByName: (dict "root" $ "name" N) → the stage as JSON ("{}" if none). */}}
{{- define "weft.stageByName" -}}
{{- $found := dict -}}
{{- range .root.Values.topology.stages -}}
{{- if eq (toString .name) (toString $.name) -}}{{- $found = . -}}{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end }}

{{/*
weft.workloads computes the Kubernetes workloads from the topology, as JSON
{"items": [...]}. Each item: name (component name), mode (daemonset |
deployment | statefulset), stages (the stage names its main container runs),
kinds, sidecars (stages with sidecarOf one of its stages), replicas,
autoscale. Stages deployed `inprocess` share one workload, `inprocess`,
which is a DaemonSet when it holds a collector. `sidecarOf: app` stages make
no workload: they join the user's pods.
*/}}
{{- define "weft.workloads" -}}
{{- $root := . -}}
{{- $items := list -}}
{{- $inproc := list -}}
{{- $inprocKinds := list -}}
{{- range $s := .Values.topology.stages -}}
{{- $mode := include "weft.stageDeploy" (dict "stage" $s) -}}
{{- if eq $mode "inprocess" -}}
{{- $inproc = append $inproc $s.name -}}
{{- $inprocKinds = append $inprocKinds $s.kind -}}
{{- else if ne $mode "sidecar" -}}
{{- $items = append $items (dict "name" $s.name "mode" $mode "stages" (list $s.name) "kinds" (list $s.kind) "replicas" (int ($s.replicas | default 1)) "autoscale" ($s.autoscale | default dict)) -}}
{{- end -}}
{{- end -}}
{{- if $inproc -}}
{{- $mode := ternary "daemonset" "deployment" (has "collector" $inprocKinds) -}}
{{- $items = append $items (dict "name" "inprocess" "mode" $mode "stages" $inproc "kinds" (uniq $inprocKinds) "replicas" 1 "autoscale" dict) -}}
{{- end -}}
{{- range $w := $items -}}
{{- $sidecars := list -}}
{{- $kinds := $w.kinds -}}
{{- range $s := $root.Values.topology.stages -}}
{{- if and (eq (include "weft.stageDeploy" (dict "stage" $s)) "sidecar") (has (toString $s.sidecarOf) $w.stages) -}}
{{- $sidecars = append $sidecars $s.name -}}
{{- $kinds = append $kinds $s.kind -}}
{{- end -}}
{{- end -}}
{{- $_ := set $w "sidecars" $sidecars -}}
{{- $_ := set $w "allKinds" (uniq $kinds) -}}
{{- end -}}
{{- toJson (dict "items" $items) -}}
{{- end }}

{{/* weft.appSidecars: the names of `sidecarOf: app` stages, as JSON {"items": [...]}. */}}
{{- define "weft.appSidecars" -}}
{{- $items := list -}}
{{- range $s := .Values.topology.stages -}}
{{- if and (eq (include "weft.stageDeploy" (dict "stage" $s)) "sidecar") (eq (toString $s.sidecarOf) "app") -}}
{{- $items = append $items $s.name -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "items" $items) -}}
{{- end }}

{{/* weft.stageNeedsNeo4j: a stage → "true" when it writes the graph to Neo4j. */}}
{{- define "weft.stageNeedsNeo4j" -}}
{{- if and (eq (toString .kind) "graph") .config -}}
{{- if eq (toString (get .config "store")) "neo4j" -}}true{{- end -}}
{{- end -}}
{{- end }}

{{- define "weft.needsNeo4j" -}}
{{- range .Values.topology.stages -}}
{{- if include "weft.stageNeedsNeo4j" . -}}true{{- end -}}
{{- end -}}
{{- end }}

{{- define "weft.deploysNats" -}}
{{- if not .Values.nats.url -}}true{{- end -}}
{{- end }}

{{- define "weft.natsURL" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{ ternary "tls" "nats" (eq (include "weft.natsTLS" .) "true") }}://{{ include "weft.componentName" (dict "root" . "name" "nats") }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:4222
{{- end -}}
{{- end }}

{{- define "weft.neo4jURI" -}}
{{- if .Values.neo4j.uri -}}
{{- .Values.neo4j.uri -}}
{{- else -}}
neo4j://{{ include "weft.componentName" (dict "root" . "name" "neo4j") }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:7687
{{- end -}}
{{- end }}

{{- define "weft.neo4jSecretName" -}}
{{- .Values.neo4j.existingSecret | default (include "weft.componentName" (dict "root" . "name" "neo4j")) -}}
{{- end }}

{{/* weft.urlPort: (dict "url" U "default" P) → the URL's port, or P. */}}
{{- define "weft.urlPort" -}}
{{- $m := regexFind ":[0-9]+(/|$)" (toString .url) | trimPrefix ":" | trimSuffix "/" -}}
{{- $m | default .default -}}
{{- end }}

{{/* weft.otlpEndpoint: (dict "root" $ "stage" S) → the endpoint an otlp stage exports to. */}}
{{- define "weft.otlpEndpoint" -}}
{{- $ep := "" -}}
{{- if .stage.config -}}{{- $ep = get .stage.config "endpoint" | default "" -}}{{- end -}}
{{- $ep | default .root.Values.otlp.endpoint -}}
{{- end }}

{{/*
weft.resources: (dict "root" $ "stage" NAME "guaranteed" BOOL) → the
container's resources. Guaranteed containers (every container of a
collector pod, so the kernel-event path is never the first evicted) get
limits equal to requests: the explicit limits if set, else the preset's.
*/}}
{{- define "weft.resources" -}}
{{- $presets := dict
  "small" (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "cpu" "500m" "memory" "512Mi"))
  "medium" (dict "requests" (dict "cpu" "250m" "memory" "512Mi") "limits" (dict "cpu" "1" "memory" "1Gi"))
  "large" (dict "requests" (dict "cpu" "500m" "memory" "1Gi") "limits" (dict "cpu" "2" "memory" "2Gi")) -}}
{{- $w := get .root.Values.workloads .stage | default dict -}}
{{- $preset := $w.resourcesPreset | default .root.Values.resourcesPreset -}}
{{- $res := $w.resources | default (get $presets $preset) -}}
{{- if .guaranteed -}}
{{- $l := $res.limits | default $res.requests -}}
{{- toYaml (dict "requests" $l "limits" $l) -}}
{{- else -}}
{{- toYaml $res -}}
{{- end -}}
{{- end }}

{{/*
weft.restrictedContainerSecurity: (dict "uid" N) → the restricted Pod
Security profile for one container. The user is set on the container too,
for containers in pods whose pod-level context is not ours (collector
pods, the users' pods).
*/}}
{{- define "weft.restrictedContainerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 65532 }}
runAsGroup: {{ .uid | default 65532 }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
weft.collectorContainerSecurity: root with only the capabilities eBPF needs
(collector.capabilities; root because Kubernetes cannot give a non-root
process ambient capabilities), or privileged as an opt-in.
*/}}
{{- define "weft.collectorContainerSecurity" -}}
{{- if .Values.collector.privileged -}}
privileged: true
runAsUser: 0
runAsNonRoot: false
readOnlyRootFilesystem: true
{{- else -}}
runAsUser: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  add: {{ .Values.collector.capabilities | uniq | toJson }}
seccompProfile:
  {{- toYaml .Values.collector.seccompProfile | nindent 2 }}
{{- end -}}
{{- end }}

{{/*
weft.container: one container running some stages.
(dict "root" $ "name" CONTAINER "stages" [NAMES] "port" PORT "guaranteed" BOOL "app" BOOL)
"app" marks a container printed for the user's pods.
*/}}
{{- define "weft.container" -}}
{{- $root := .root -}}
{{- $kinds := list -}}
{{- $stages := list -}}
{{- range $n := .stages -}}
{{- $s := include "weft.stageByName" (dict "root" $root "name" $n) | fromJson -}}
{{- $stages = append $stages $s -}}
{{- $kinds = append $kinds $s.kind -}}
{{- end -}}
{{- $collector := has "collector" $kinds -}}
{{- $first := first .stages -}}
name: {{ .name }}
image: {{ include "weft.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
command: {{ toJson $root.Values.image.command }}
args:
  - run
  - -f
  - /etc/weft/topology.yaml
  - --stage
  - {{ join "," .stages }}
  - --listen
  - 0.0.0.0:{{ .port }}
  - --data-dir
  - /var/lib/weft
ports:
  - name: {{ ternary "http" (printf "http-%d" (int (sub .port 7680))) (eq (int .port) 7680) }}
    containerPort: {{ .port }}
    protocol: TCP
env:
  - name: WEFT_NATS_URL
    value: {{ include "weft.natsURL" $root | quote }}
  - name: WEFT_NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
{{- if and .app $collector }}
  {{- /* A collector in the user's pod sees the whole node: it reports its own pod only. */}}
  - name: WEFT_POD_UID
    valueFrom:
      fieldRef:
        fieldPath: metadata.uid
{{- end }}
{{- with $root.Values.nats.auth }}
{{- if and .existingSecret .credsKey }}
  - name: WEFT_NATS_CREDS
    value: /etc/weft/nats/nats.creds
{{- else if .existingSecret }}
  - name: WEFT_NATS_USER
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .userKey }}
  - name: WEFT_NATS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- include "weft.natsClientEnv" $root }}
{{- include "weft.apiTokenEnv" $root }}
{{- range $s := $stages }}
{{- if include "weft.stageNeedsNeo4j" $s }}
  - name: WEFT_NEO4J_URI
    value: {{ include "weft.neo4jURI" $root | quote }}
  - name: WEFT_NEO4J_USER
    value: {{ $root.Values.neo4j.user | quote }}
  - name: WEFT_NEO4J_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "weft.neo4jSecretName" $root }}
        key: {{ $root.Values.neo4j.passwordKey }}
{{- end }}
{{- if eq (toString $s.kind) "otlp" }}
  - name: OTEL_EXPORTER_OTLP_ENDPOINT
    value: {{ include "weft.otlpEndpoint" (dict "root" $root "stage" $s) | quote }}
{{- end }}
{{- end }}
{{- if and $collector (not .app) }}
  - name: WEFT_HOST_PROC
    value: /host/proc
  - name: WEFT_HOST_CGROUP
    value: /host/sys/fs/cgroup
{{- end }}
{{- range $n := .stages }}
{{- with (get $root.Values.workloads $n | default dict).env }}
{{ toYaml . }}
{{- end }}
{{- end }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  initialDelaySeconds: 10
  periodSeconds: 20
  failureThreshold: 3
resources:
  {{- include "weft.resources" (dict "root" $root "stage" $first "guaranteed" .guaranteed) | nindent 2 }}
securityContext:
{{- if $collector }}
  {{- include "weft.collectorContainerSecurity" $root | nindent 2 }}
{{- else }}
  {{- include "weft.restrictedContainerSecurity" dict | nindent 2 }}
{{- end }}
{{- $vp := ternary "weft-" "" (.app | default false) }}
volumeMounts:
  - name: {{ $vp }}topology
    mountPath: /etc/weft
    readOnly: true
  - name: {{ $vp }}tmp
    mountPath: /tmp
  - name: {{ $vp }}data
    mountPath: /var/lib/weft
{{- if .app }}
  - name: weft-socket
    mountPath: {{ $root.Values.appSidecar.socketDir }}
{{- end }}
{{- include "weft.natsClientMounts" (dict "root" $root "prefix" $vp) }}
{{- include "weft.apiTokenMount" (dict "root" $root "prefix" $vp) }}
{{- if and $root.Values.nats.auth.existingSecret $root.Values.nats.auth.credsKey }}
  - name: {{ $vp }}nats-creds
    mountPath: /etc/weft/nats
    readOnly: true
{{- end }}
{{- if $collector }}
  - name: {{ $vp }}btf
    mountPath: /sys/kernel/btf
    readOnly: true
{{- if not .app }}
  - name: host-proc
    mountPath: /host/proc
    readOnly: true
  - name: host-cgroup
    mountPath: /host/sys/fs/cgroup
    readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
weft.podSpec: the pod of one workload (an item of weft.workloads).
(dict "root" $ "w" WORKLOAD)
*/}}
{{- define "weft.podSpec" -}}
{{- $root := .root -}}
{{- $w := .w -}}
{{- $collector := has "collector" $w.allKinds -}}
{{- $ws := get $root.Values.workloads (first $w.stages) | default dict -}}
serviceAccountName: {{ include "weft.componentName" (dict "root" $root "name" $w.name) }}
automountServiceAccountToken: {{ include "weft.workloadRBAC" (dict "root" $root "w" $w) | empty | not }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $collector }}
hostPID: true
securityContext:
  seccompProfile:
    type: RuntimeDefault
{{- with $root.Values.collector.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- else }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- with $ws.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
terminationGracePeriodSeconds: 45
containers:
  - {{ include "weft.container" (dict "root" $root "name" (ternary "weft" (first $w.stages) (eq $w.name "inprocess")) "stages" $w.stages "port" 7680 "guaranteed" $collector) | nindent 4 | trim }}
{{- range $i, $sc := $w.sidecars }}
  - {{ include "weft.container" (dict "root" $root "name" $sc "stages" (list $sc) "port" (add 7681 $i) "guaranteed" $collector) | nindent 4 | trim }}
{{- end }}
volumes:
  - name: topology
    configMap:
      name: {{ include "weft.componentName" (dict "root" $root "name" "topology") }}
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- if ne $w.mode "statefulset" }}
  - name: data
    emptyDir:
      sizeLimit: 1Gi
{{- end }}
{{- include "weft.natsCredsVolume" (dict "root" $root "prefix" "") }}
{{- include "weft.natsClientVolumes" (dict "root" $root "prefix" "") }}
{{- include "weft.apiTokenVolume" (dict "root" $root "prefix" "") }}
{{- if $collector }}
  - name: btf
    hostPath:
      path: {{ $root.Values.collector.hostPaths.btf }}
      type: Directory
  - name: host-proc
    hostPath:
      path: {{ $root.Values.collector.hostPaths.proc }}
      type: Directory
  - name: host-cgroup
    hostPath:
      path: {{ $root.Values.collector.hostPaths.cgroup }}
      type: Directory
tolerations:
  {{- toYaml (concat $root.Values.collector.tolerations ($ws.tolerations | default list)) | nindent 2 }}
{{- else }}
{{- with $ws.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $root.Values.topologySpread.enabled (ne $w.mode "daemonset") }}
topologySpreadConstraints:
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "weft.selectorLabels" (dict "root" $root "component" $w.name) | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}
{{- with $ws.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $ws.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* weft.podMeta: (dict "root" $ "w" WORKLOAD) → pod template metadata. */}}
{{- define "weft.podMeta" -}}
{{- $ws := get .root.Values.workloads (first .w.stages) | default dict -}}
labels:
  {{- include "weft.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .w.name }}
  weft.dev/workload: {{ .w.name }}
  weft.dev/nats-client: "true"
{{- if include "weft.workloadNeedsNeo4j" . }}
  weft.dev/neo4j-client: "true"
{{- end }}
{{- with $ws.podLabels }}
  {{- toYaml . | nindent 2 }}
{{- end }}
annotations:
  checksum/topology: {{ toJson .root.Values.topology | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $ws.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
weft.workloadRBAC: (dict "root" $ "w" WORKLOAD) → the ClusterRole suffixes
the workload's ServiceAccount is bound to, space separated; empty when it
needs no Kubernetes API access.
*/}}
{{- define "weft.workloadRBAC" -}}
{{- $roles := list -}}
{{- if .root.Values.rbac.create -}}
{{- if has "collector" .w.allKinds -}}{{- $roles = append $roles "collector" -}}{{- end -}}
{{- end -}}
{{- join " " $roles -}}
{{- end }}

{{/*
weft.sidecarSnippet: (dict "root" $ "stage" NAME) → the part of a PodSpec to
merge into an application's pod for a `sidecarOf: app` stage: the container
and the volumes it needs, among them the emptyDir the app shares with it
for a unix socket.
*/}}
{{- define "weft.sidecarSnippet" -}}
{{- $root := .root -}}
{{- $s := include "weft.stageByName" (dict "root" $root "name" .stage) | fromJson -}}
{{- if not $s.name -}}
{{- fail (printf "sidecar: no stage %q in topology %s" .stage $root.Values.topology.metadata.name) -}}
{{- end -}}
{{- if not (and (eq (include "weft.stageDeploy" (dict "stage" $s)) "sidecar") (eq (toString $s.sidecarOf) "app")) -}}
{{- fail (printf "sidecar: stage %q is not `deploy: sidecar` with `sidecarOf: app`; the chart deploys it itself" .stage) -}}
{{- end -}}
# Stage {{ .stage }} of topology {{ $root.Values.topology.metadata.name }}: add these to the
# application's pod spec (the volume names start with weft- so they do not
# clash with the application's). Mount weft-socket in the application
# container at {{ $root.Values.appSidecar.socketDir }} as well. The pod needs the label
# weft.dev/nats-client: "true" (the NATS NetworkPolicy admits it) and the
# ConfigMap {{ include "weft.componentName" (dict "root" $root "name" "topology") }} (the topology) in its namespace:
#   kubectl create configmap {{ include "weft.componentName" (dict "root" $root "name" "topology") }} -n APP_NAMESPACE --from-file=topology.yaml=TOPOLOGY_FILE
containers:
  - {{ include "weft.container" (dict "root" $root "name" (printf "weft-%s" .stage | trunc 63) "stages" (list .stage) "port" $root.Values.appSidecar.port "guaranteed" false "app" true) | nindent 4 | trim }}
volumes:
  - name: weft-topology
    configMap:
      name: {{ include "weft.componentName" (dict "root" $root "name" "topology") }}
  - name: weft-tmp
    emptyDir:
      sizeLimit: 64Mi
  - name: weft-data
    emptyDir:
      sizeLimit: 1Gi
  - name: weft-socket
    emptyDir: {}
{{- include "weft.natsCredsVolume" (dict "root" $root "prefix" "weft-") }}
{{- include "weft.natsClientVolumes" (dict "root" $root "prefix" "weft-") }}
{{- include "weft.apiTokenVolume" (dict "root" $root "prefix" "weft-") }}
{{- if eq (toString $s.kind) "collector" }}
  - name: weft-btf
    hostPath:
      path: {{ $root.Values.collector.hostPaths.btf }}
      type: Directory
{{- end }}
{{- end }}

{{/* weft.workloadNeedsNeo4j: (dict "root" $ "w" WORKLOAD) → "true" when one of its stages writes to Neo4j. */}}
{{- define "weft.workloadNeedsNeo4j" -}}
{{- $root := .root -}}
{{- range $n := concat .w.stages .w.sidecars -}}
{{- include "weft.stageNeedsNeo4j" (include "weft.stageByName" (dict "root" $root "name" $n) | fromJson) -}}
{{- end -}}
{{- end }}

{{/* weft.to: (dict "to" PEERS "indent" N) → a `to:` block on a new line, or nothing (any destination). */}}
{{- define "weft.to" -}}
{{- with .to -}}
{{- printf "to:\n%s" (toYaml . | indent 2) | nindent $.indent -}}
{{- end -}}
{{- end }}

{{/* weft.natsCredsVolume: (dict "root" $ "prefix" P) → the volume of the NATS .creds file, if one is used. */}}
{{- define "weft.natsCredsVolume" -}}
{{- with .root.Values.nats.auth }}
{{- if and .existingSecret .credsKey }}
  - name: {{ $.prefix }}nats-creds
    secret:
      secretName: {{ .existingSecret }}
      items:
        - key: {{ .credsKey }}
          path: nats.creds
{{- end }}
{{- end }}
{{- end }}

{{/* weft.natsTLS: "true" when the chart's own NATS speaks TLS. */}}
{{- define "weft.natsTLS" -}}
{{- if and (include "weft.deploysNats" .) .Values.nats.tls.enabled -}}true{{- end -}}
{{- end }}

{{/* weft.natsIdentities: "true" when the chart's own NATS admits stages by their service-account tokens (weft nats-auth). */}}
{{- define "weft.natsIdentities" -}}
{{- if and (include "weft.deploysNats" .) .Values.nats.identities.enabled -}}true{{- end -}}
{{- end }}

{{/* weft.natsIdentitiesJSON: weft nats-auth's identities file (natsauth.Config): which service account runs which stages, and the operator's. */}}
{{- define "weft.natsIdentitiesJSON" -}}
{{- $root := . -}}
{{- $sas := dict -}}
{{- range $w := (include "weft.workloads" . | fromJson).items -}}
{{- $_ := set $sas (include "weft.componentName" (dict "root" $root "name" $w.name)) (concat $w.stages $w.sidecars) -}}
{{- end -}}
{{- $ids := dict "namespace" .Release.Namespace "audience" .Values.nats.identities.audience "account" "WEFT" "serviceAccounts" $sas -}}
{{- if .Values.nats.identities.operator.enabled -}}
{{- $_ := set $ids "operators" (list (include "weft.componentName" (dict "root" $root "name" "operator"))) -}}
{{- end -}}
{{- toJson $ids -}}
{{- end }}

{{/* weft.apiTokenSecret: the Secret holding the HTTP API's bearer token. */}}
{{- define "weft.apiTokenSecret" -}}
{{- .Values.api.existingSecret | default (include "weft.componentName" (dict "root" . "name" "api-token")) -}}
{{- end }}

{{/*
weft.tlsMaterial sets .Values._weftTLS once per render: the CA, and the
NATS servers' and the stages' certificates, each PEM. The CA comes from
Secret <release>-nats-ca when it exists (generated on install, kept
forever: clients trust it). The certificates come from Secret
<release>-nats-tls while they were signed by that CA and their renew-after
date (two thirds of nats.tls.certDays) has not passed; otherwise they are
issued again here, from the same CA; the operator's client certificate,
kept in Secret <release>-nats-operator-tls, with them. `helm template` (no
cluster) issues fresh ones each time.
*/}}
{{- define "weft.tlsMaterial" -}}
{{- if not (hasKey .Values "_weftTLS") -}}
{{- $ns := .Release.Namespace -}}
{{- $name := include "weft.componentName" (dict "root" . "name" "nats") -}}
{{- $headless := printf "%s-headless" $name | trunc 63 | trimSuffix "-" -}}
{{- $caSecret := lookup "v1" "Secret" $ns (printf "%s-ca" $name) -}}
{{- $ca := dict -}}
{{- if and $caSecret (index ($caSecret.data | default dict) "ca.key") -}}
{{- $ca = buildCustomCert (index $caSecret.data "ca.crt") (index $caSecret.data "ca.key") -}}
{{- else -}}
{{- $ca = genCA (printf "%s-ca" $name) 3650 -}}
{{- end -}}
{{- $now := dateInZone "2006-01-02T15:04:05Z" now "UTC" -}}
{{- $m := dict "caCert" $ca.Cert "caKey" $ca.Key -}}
{{- $old := lookup "v1" "Secret" $ns (printf "%s-tls" $name) -}}
{{- $oldData := ($old | default dict).data | default dict -}}
{{- $renewAfter := (($old | default dict).metadata | default dict).annotations | default dict -}}
{{- $renewAfter = get $renewAfter "weft.dev/renew-after" -}}
{{- if and $oldData (eq (index $oldData "ca.crt" | default "" | b64dec) $ca.Cert) $renewAfter (lt $now $renewAfter) -}}
{{- $_ := set $m "serverCert" (index $oldData "server.crt" | b64dec) -}}
{{- $_ := set $m "serverKey" (index $oldData "server.key" | b64dec) -}}
{{- $_ := set $m "clientCert" (index $oldData "client.crt" | b64dec) -}}
{{- $_ := set $m "clientKey" (index $oldData "client.key" | b64dec) -}}
{{- $_ := set $m "renewAfter" $renewAfter -}}
{{- $opData := (lookup "v1" "Secret" $ns (printf "%s-operator-tls" $name) | default dict).data | default dict -}}
{{- if and (index $opData "tls.crt") (eq (index $opData "ca.crt" | default "" | b64dec) $ca.Cert) -}}
{{- $_ := set $m "operatorCert" (index $opData "tls.crt" | b64dec) -}}
{{- $_ := set $m "operatorKey" (index $opData "tls.key" | b64dec) -}}
{{- end -}}
{{- else -}}
{{- $days := int .Values.nats.tls.certDays -}}
{{- $dns := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.%s" $name $ns .Values.clusterDomain) (printf "*.%s.%s.svc.%s" $headless $ns .Values.clusterDomain) (printf "*.%s.%s.svc" $headless $ns) "localhost" -}}
{{- $srv := genSignedCert $name (list "127.0.0.1") $dns $days $ca -}}
{{- $cli := genSignedCert "weft-stage" nil nil $days $ca -}}
{{- $_ := set $m "serverCert" $srv.Cert -}}
{{- $_ := set $m "serverKey" $srv.Key -}}
{{- $_ := set $m "clientCert" $cli.Cert -}}
{{- $_ := set $m "clientKey" $cli.Key -}}
{{- $_ := set $m "renewAfter" (dateInZone "2006-01-02T15:04:05Z" (now | dateModify (printf "+%dh" (div (mul $days 48) 3))) "UTC") -}}
{{- end -}}
{{- if not (hasKey $m "operatorCert") -}}
{{- /* The operator's client certificate (weft streams, replay, dlq from
a workstation), apart from the stages': who may read it need not read the
servers' key. It expires with the stages' and is issued again with them. */ -}}
{{- $op := genSignedCert "weft-operator" nil nil (int .Values.nats.tls.certDays) $ca -}}
{{- $_ := set $m "operatorCert" $op.Cert -}}
{{- $_ := set $m "operatorKey" $op.Key -}}
{{- end -}}
{{- $_ := set .Values "_weftTLS" $m -}}
{{- end -}}
{{- end }}

{{/* weft.natsClientEnv: the env of a stage container for the chart's NATS identity and TLS. */}}
{{- define "weft.natsClientEnv" -}}
{{- if include "weft.natsIdentities" . }}
  - name: WEFT_NATS_TOKEN_FILE
    value: /var/run/secrets/weft/nats-token/token
{{- end }}
{{- if include "weft.natsTLS" . }}
  - name: WEFT_NATS_TLS_CA
    value: /var/run/secrets/weft/nats-tls/ca.crt
  - name: WEFT_NATS_TLS_CERT
    value: /var/run/secrets/weft/nats-tls/tls.crt
  - name: WEFT_NATS_TLS_KEY
    value: /var/run/secrets/weft/nats-tls/tls.key
{{- end }}
{{- end }}

{{/* weft.natsClientMounts: (dict "root" $ "prefix" P) → volume mounts for weft.natsClientEnv. */}}
{{- define "weft.natsClientMounts" -}}
{{- if include "weft.natsIdentities" .root }}
  - name: {{ .prefix }}nats-token
    mountPath: /var/run/secrets/weft/nats-token
    readOnly: true
{{- end }}
{{- if include "weft.natsTLS" .root }}
  - name: {{ .prefix }}nats-tls
    mountPath: /var/run/secrets/weft/nats-tls
    readOnly: true
{{- end }}
{{- end }}

{{/* weft.natsClientVolumes: (dict "root" $ "prefix" P) → the volumes of weft.natsClientMounts. */}}
{{- define "weft.natsClientVolumes" -}}
{{- $root := .root -}}
{{- if include "weft.natsIdentities" $root }}
  - name: {{ .prefix }}nats-token
    projected:
      sources:
        # The kubelet writes a token for this pod, naming its service
        # account and node, and rewrites it before it expires; weft reads it
        # at every (re)connect.
        - serviceAccountToken:
            audience: {{ $root.Values.nats.identities.audience }}
            expirationSeconds: {{ int $root.Values.nats.identities.tokenExpirationSeconds }}
            path: token
{{- end }}
{{- if include "weft.natsTLS" $root }}
  - name: {{ .prefix }}nats-tls
    secret:
      secretName: {{ include "weft.componentName" (dict "root" $root "name" "nats") }}-tls
      items:
        - {key: ca.crt, path: ca.crt}
        - {key: client.crt, path: tls.crt}
        - {key: client.key, path: tls.key}
{{- end }}
{{- end }}

{{/* weft.apiTokenEnv / weft.apiTokenMount / weft.apiTokenVolume: the HTTP API's bearer token in a stage container. */}}
{{- define "weft.apiTokenEnv" -}}
{{- if eq .Values.api.auth "token" }}
  - name: WEFT_API_TOKEN_FILE
    value: /var/run/secrets/weft/api-token/token
{{- end }}
{{- end }}
{{- define "weft.apiTokenMount" -}}
{{- if eq .root.Values.api.auth "token" }}
  - name: {{ .prefix }}api-token
    mountPath: /var/run/secrets/weft/api-token
    readOnly: true
{{- end }}
{{- end }}
{{- define "weft.apiTokenVolume" -}}
{{- if eq .root.Values.api.auth "token" }}
  - name: {{ .prefix }}api-token
    secret:
      secretName: {{ include "weft.apiTokenSecret" .root }}
      items:
        - {key: {{ .root.Values.api.tokenKey }}, path: token}
{{- end }}
{{- end }}
