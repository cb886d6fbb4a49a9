// Package charts holds weft's Helm chart (charts/weft), embedded so Go
// tests (charts/render) and the image builder (charts/image) read exactly
// the chart that ships. It owns the chart files only; rendering lives in
// charts/render, which the weft binary must not link (see its doc). It
// must not import any stage kind: the chart knows stages through the
// topology document.
package charts
