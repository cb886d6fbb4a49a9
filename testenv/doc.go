// Package testenv holds what tests and `weft up --demo` need to run weft
// for real on one machine: an embedded NATS server per test, simulated
// pods (network namespaces + cgroups), an in-process OTLP receiver,
// workload generators with known ground truth, and Debian's kernels
// booted under qemu for the collector's kernel matrix (testenv/kernels).
//
// testenv may import anything; nothing but tests and cmd/weft imports it.
package testenv
