// Package bpf owns weft's kernel side: the eBPF programs (collector.c, CO-RE
// against the kernel's BTF), their bpf2go-generated loader and record types
// (Collector*), attaching and detaching them, the ring buffer they write,
// and the per-CPU counter of events the kernel could not reserve room for.
//
// It knows nothing of streams, pods or the schema: records leave it as raw
// bytes for collectors/decode. It is the only package of weft that touches
// eBPF.
package bpf
