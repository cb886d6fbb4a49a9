// Package render renders the embedded weft Helm chart (package charts)
// with the Helm SDK (helm.sh/helm/v3) as a library, client-side, the way
// `helm template` does: for a topology it gives the Kubernetes objects a
// `helm install` would create, and for a `sidecarOf: app` stage the
// container to add to an application's pod.
//
// It owns no Kubernetes access and no chart logic: every decision about
// workloads is in the chart's templates, so `helm install` and these
// functions cannot disagree.
//
// The weft binary must not import this package. The Helm SDK links
// client-go's scheme with every built-in API group, registered at init:
// linked into the one binary it cost every process (the node collector's
// above all) 12 to 26 MiB of resident memory and 24 MB of binary at start
// (`weft version` and `weft run --stage correlator`, two sessions), for
// code only a renderer runs, and Go runs every linked package's init. So
// the binary prints chart values (`weft topology values`) for Helm itself,
// and this package serves the chart's tests and Go programs that want the
// rendered objects.
package render
