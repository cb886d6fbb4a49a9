package topology_test

import (
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/topology"
)

// FuzzParse: any file is a topology or an *Error whose every issue has a
// line, never a panic; a topology that parses can be shown in every format.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(header + "  -\n"))
	f.Add([]byte(header + "  - {name: a, kind: gen, outputs: [EVENTS], config: {rate: 5}}\n"))
	f.Add([]byte(header + "  - {name: a, kind: gen, outputs: [EVENTS], config: [1]}\n  - x\n"))
	f.Add([]byte("streams: {A: {subjects: [\"a.>\"], maxAge: 7d, maxBytes: 1GiB}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	reg := testKinds()
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := topology.Parse("f.yaml", data, reg)
		if err != nil {
			var te *topology.Error
			if !errors.As(err, &te) || len(te.Issues) == 0 {
				t.Fatalf("error %v is no *topology.Error with issues", err)
			}
			for _, is := range te.Issues {
				if is.Line <= 0 {
					t.Fatalf("issue without a line: %s", is)
				}
			}
			return
		}
		for _, format := range topology.Formats {
			if err := topology.Render(io.Discard, top, format); err != nil {
				t.Fatalf("render %s: %v", format, err)
			}
		}
	})
}

// FuzzParseDuration: an error, or the duration the text names.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "24h", "7d", "-1d", "106751d", "106752d", "1.5h", "d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := topology.ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("%q: negative %v", s, d)
		}
		if days, ok := strings.CutSuffix(s, "d"); ok {
			n, _ := strconv.Atoi(days)
			if d != time.Duration(n)*24*time.Hour || d/(24*time.Hour) != time.Duration(n) {
				t.Fatalf("%q: %v, not %d days", s, d, n)
			}
		}
	})
}

// FuzzParseByteSize: an error, or a size that is the number times its unit.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"1073741824", "512MiB", "10GiB", "1G", " 3 KB ", "9223372036854775807", "8388608TiB", "-1B", "B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := topology.ParseByteSize(s)
		if err != nil {
			return
		}
		if n < 0 || n > math.MaxInt64 {
			t.Fatalf("%q: %d", s, n)
		}
		digits := strings.TrimRightFunc(strings.TrimSpace(s), func(r rune) bool { return r < '0' || r > '9' })
		num, err := strconv.ParseInt(strings.TrimSpace(digits), 10, 64)
		if err == nil && num != 0 && n%num != 0 {
			t.Fatalf("%q: %d is no multiple of %d", s, n, num)
		}
	})
}
