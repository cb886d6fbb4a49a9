package bpf

// The generated Collector* types and the .o files are committed, so building
// needs no clang; `task generate` (or `go generate ./collectors/bpf/`)
// rebuilds them. vmlinux.h comes from the running kernel's BTF:
//   bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type exec_event -type exit_event -type tcp_event -type unix_event -type task_hdr -type listen_key Collector collector.c

// The legacy object, for kernels without BPF atomics (5.10, 5.11): the
// same source without what those kernels lack (see collector.c).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -DWEFT_LEGACY" -target bpfel CollectorLegacy collector.c
