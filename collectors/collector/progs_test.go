package collector

import (
	"fmt"

	"github.com/cilium/ebpf"
)

func programGone(id ebpf.ProgramID) error {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil
	}
	p.Close()
	return fmt.Errorf("program %d still loaded", id)
}
