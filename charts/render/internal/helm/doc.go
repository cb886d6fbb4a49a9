// Package helm is the part of the Helm SDK (helm.sh/helm/v3, the version in
// go.mod) that renders a chart client-side, as `helm template` does:
// pkg/engine (Render), pkg/chartutil (values, coalescing, the values
// schema, capabilities) and pkg/releaseutil (manifest sorting), copied from
// the Helm source with as few changes as possible. Helm's own chart and
// chart/loader packages are used as they are.
//
// Why a copy: Helm's chartutil and engine link client-go's full clientset
// scheme (every built-in API group, registered at init), its dynamic and
// discovery clients (for `lookup`, which `helm template` does not use) and
// apiextensions. In the one weft binary that cost every process, the node
// collector's above all, tens of MiB of resident memory at start for code
// only `weft topology render` runs.
//
// The changes (each marked "weft:"): engine has no cluster client (Render
// only; "lookup" returns an empty map, as in Helm without one);
// capabilities take Helm's default API version set and Helm's version from
// versionset.go, generated from the Helm SDK by TestVersionSet -update,
// instead of computing them from client-go's scheme at init; the three
// packages are one. charts/render's TestSameAsHelm renders with this
// package and with the Helm SDK and wants the same text and errors; after a
// Helm or client-go update, run both tests.
//
// Copyright The Helm Authors; licensed under the Apache License, Version
// 2.0 (each file keeps its notice).
package helm
