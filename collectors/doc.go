// Package collectors holds weft's event sources: the eBPF collectors that
// capture what processes do on a node (process, TCP, unix sockets), their
// loaders, decoders and node-local enrichment, and the synthetic generator.
// Sources publish to the EVENTS stream through streams/publish; they never
// import correlator/ or exporters/.
//
// The eBPF collector is the `collector` stage kind (collectors/collector),
// built from the programs and their loader (collectors/bpf), record
// decoding (collectors/decode), and enrichment pid → cgroup → container →
// pod (collectors/cgroup, collectors/metadata, collectors/enrich);
// collectors/bench measures it. Only this tree touches eBPF.
package collectors
