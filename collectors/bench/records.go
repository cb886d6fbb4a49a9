package bench

import (
	_ "embed"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

type ringbufRecord struct{ ringbuf.Record }

// recorded is a capture of real ring-buffer records (a loopback storm
// plus the processes around it), for replay where the kernel cannot be
// recorded (no privileges). Regenerate: go test ./collectors/bench -run TestRecord -update
//
//go:embed testdata/records.bin
var recorded []byte

// Recorded returns the committed capture.
func Recorded() ([][]byte, error) { return DecodeRecords(recorded) }

func unsafeBytes(w []uint64) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*8)
}
