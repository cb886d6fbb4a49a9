// Package charts holds weft's Helm chart (charts/weft), embedded so the
// weft binary and Go tests render exactly the chart that ships. It owns the
// chart files only; rendering lives in charts/render. It must not import
// any stage kind: the chart knows stages through the topology document.
package charts
