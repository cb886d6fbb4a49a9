// Package render renders the embedded weft Helm chart (package charts)
// with the Helm Go SDK's code, client-side, the way `helm template` does:
// for a topology it gives the Kubernetes objects a `helm install` would
// create, and for a `sidecarOf: app` stage the container to add to an
// application's pod (`weft topology render --sidecar`).
//
// It owns no Kubernetes access and no chart logic: every decision about
// workloads is in the chart's templates, so `helm install` and these
// functions cannot disagree.
//
// Helm's chart loader is used as it is; its engine, values handling and
// manifest sorting are a copy (internal/helm) that links no Kubernetes
// client, because Helm's own link client-go's every API group into the one
// weft binary (see internal/helm). TestSameAsHelm renders with both and
// wants the same text and errors.
package render
