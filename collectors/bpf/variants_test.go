package bpf

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The collector has variants for older kernels: the legacy object (no BPF
// atomics: 5.10, 5.11) and reads without bpf_rdonly_cast (before 6.2).
// The kernel matrix (testenv/kernels) runs this suite on those kernels;
// TestVariants also runs the ground-truth tests in each variant on this
// kernel, by running this test binary again with WEFT_TEST_VARIANT.
const variantEnv = "WEFT_TEST_VARIANT"

// open is Open in the variant this test binary runs.
func open(o Options) (*Collector, error) {
	for _, v := range strings.Split(os.Getenv(variantEnv), ",") {
		switch v {
		case "legacy":
			o.legacy = true
		case "nocasts":
			o.noCasts = true
		}
	}
	return Open(o)
}

func TestVariants(t *testing.T) {
	requireRoot(t)
	if os.Getenv(variantEnv) != "" {
		t.Skip("skipping: already a variant's run")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	groundTruth := "^(TestTCPBytesExact|TestTaskHeader|TestListenerBeforeAttach|TestEstablishedBeforeAttach|TestSweep|TestSweepRacesClose|TestProgress|TestUntrackedCloses|TestConnectTimedOut|TestSelfConnect|TestReuseportSiblings|TestPauseResume|TestVariantIs)$"
	for _, v := range []string{"legacy", "nocasts"} {
		t.Run(v, func(t *testing.T) {
			cmd := exec.Command(self, "-test.run", groundTruth, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), variantEnv+"="+v)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("variant %s: %v\n%s", v, err, out)
			}
			if !strings.Contains(string(out), "--- PASS: TestVariantIs") {
				t.Fatalf("variant %s did not run:\n%s", v, out)
			}
		})
	}
}

// TestVariantIs checks the collector is in the variant asked for (so a
// variant's run cannot pass by running the default).
func TestVariantIs(t *testing.T) {
	c := openProbes(t, ProbeTCP)
	k := c.Kernel()
	t.Logf("kernel %s: object %s, casts %v, sweep %s", k.Release, k.Object, k.Casts, k.Sweep)
	switch os.Getenv(variantEnv) {
	case "legacy":
		if k.Object != "legacy" || k.Casts {
			t.Errorf("legacy variant: %+v", k)
		}
	case "nocasts":
		if k.Object != "default" || k.Casts {
			t.Errorf("nocasts variant: %+v", k)
		}
	}
}
