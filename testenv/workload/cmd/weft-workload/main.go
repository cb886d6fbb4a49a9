// Command weft-workload runs one role of package testenv/workload
// (`weft-workload ROLE ARGS…`, the roles and their arguments as
// workload.Run documents them): the test workloads of the cluster tests,
// built static and run in pods, each logging what it did (its ground
// truth) on stdout.
package main

import (
	"fmt"
	"os"

	"github.com/weftobs/weft/testenv/workload"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: weft-workload ROLE ARGS… (see package testenv/workload)")
		os.Exit(2)
	}
	code, err := workload.Run(os.Args[1], os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-workload:", os.Args[1], err)
		os.Exit(99)
	}
	os.Exit(code)
}
