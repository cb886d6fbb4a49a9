// Package render renders the embedded weft Helm chart (package charts)
// with the Helm Go SDK, client-side, the way `helm template` does: for a
// topology it gives the Kubernetes objects a `helm install` would create,
// and for a `sidecarOf: app` stage the container to add to an
// application's pod (`weft topology render --sidecar`).
//
// It owns no Kubernetes access and no chart logic: every decision about
// workloads is in the chart's templates, so `helm install` and these
// functions cannot disagree.
package render
