// Package values writes the values file that installs a topology with the
// weft Helm chart (charts/weft): a user's values with the topology document
// as text under topologyFile, as `helm install --set-file
// topologyFile=FILE -f VALUES` would give the chart.
//
// It uses no Helm code and links no Kubernetes package, so the weft binary
// can offer it (`weft topology values`) at no cost to the processes that
// run stages; rendering the chart is Helm's (charts/render, or the helm
// CLI). It must not import any stage kind.
package values
