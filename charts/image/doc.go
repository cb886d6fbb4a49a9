// Package image builds weft's container image without a container engine:
// an OCI image layout (oci-layout, index.json, blobs) holding one layer
// with the static weft binary, run as a non-root user, under the reference
// the chart deploys by default (image.repository:appVersion). Push it with
// any OCI tool (skopeo, crane, oras) or load it into containerd.
//
// It uses go-containerregistry as a library and reads the chart's files
// (package charts) for the reference; it must not import the Helm SDK or
// any stage kind.
package image
