// Package kernels boots the collector's kernel tests on other kernels than
// the host's: Debian's own kernel packages (with BTF), fetched with
// apt-get from a private apt configuration and never installed on the
// host, booted under qemu (TCG) with an initramfs that holds busybox, an
// /init script and statically linked Go test binaries.
//
// Fetch gets and caches the kernels; Boot runs binaries on one of them
// and parses their `go test -v` output from the serial console.
//
// The package owns its cache directory and the qemu processes it starts;
// it touches nothing of the host's apt state (it reads the host's sources
// only to learn which mirror to use) and no package under collectors/.
package kernels
