// Package collectors holds weft's event sources: the eBPF collectors that
// capture what processes do on a node (process, TCP, unix sockets), their
// loaders, decoders and node-local enrichment, and the synthetic generator.
// Sources publish to the EVENTS stream through streams/publish; they never
// import correlator/ or exporters/.
package collectors
