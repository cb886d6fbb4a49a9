package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpusEnv tells a child which CPUs to run on ("0" or "1,2"); unset: any.
const cpusEnv = "WEFT_BENCH_CPUS"

// placement is where the storm and the collector run. With CPUs to
// spare, the storm's threads get CPUs of their own and the collector (and
// the NATS server, which on a cluster is on another node) the rest, the
// same in both halves of a round: the ratio is then what attaching the
// collector costs the workload in its own system calls, as on a node
// where the agent's CPU request reserves it a share. With every CPU in the
// storm, nothing is placed and the collector's own CPU is taken from the
// storm.
type placement struct {
	storm, collector []int
}

func place(workers int) placement {
	cpus, err := allowedCPUs()
	if err != nil || workers >= len(cpus) {
		return placement{}
	}
	return placement{storm: cpus[:workers], collector: cpus[workers:]}
}

func (p placement) env(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return cpusEnv + "=" + strings.Join(s, ",")
}

// allowedCPUs are the CPUs this process may run on, ascending.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, err
	}
	var cpus []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// pin moves every thread of this process to cpus; threads started later
// inherit it. Nil leaves the affinity alone.
func pin(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d to CPUs %v: %w", tid, cpus, err)
		}
	}
	return nil
}

// pinFromEnv pins this process as cpusEnv says.
func pinFromEnv() error {
	v := os.Getenv(cpusEnv)
	if v == "" {
		return nil
	}
	var cpus []int
	for _, f := range strings.Split(v, ",") {
		c, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("bad %s=%q", cpusEnv, v)
		}
		cpus = append(cpus, c)
	}
	return pin(cpus)
}
