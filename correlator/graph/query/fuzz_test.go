package query_test

import (
	"encoding/json"
	"testing"

	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/query"
)

// FuzzQuery: what GET /api/v1/query/NAME?arg=ARG (and weft graph query)
// does with a user's name and argument — find, parse, answer over a
// graph, encode — never panics, and an answer always encodes.
func FuzzQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"callers", "app"}, {"callees", ""}, {"blast-radius", "n1"}, {"brokers", ""},
		{"edges-since", "0"}, {"edges-since", "-9223372036854775808"}, {"edges-since", "1e9"},
		{"top-talkers", "3"}, {"top-talkers", "0"}, {"top-talkers", "-1"}, {"top-talkers", "9223372036854775807"},
		{"nope", "x"}, {"", ""},
	} {
		f.Add(s[0], s[1], true)
		f.Add(s[0], s[1], false)
	}
	g := export.Sample()
	f.Fuzz(func(t *testing.T, name, arg string, hasArg bool) {
		q := query.Find(name)
		if q == nil {
			return
		}
		var args []string
		if hasArg {
			args = []string{arg}
		}
		a, err := q.Parse(args)
		if err != nil {
			return
		}
		if _, err := json.Marshal(q.Embedded(g, a)); err != nil {
			t.Fatalf("query %s %q: answer does not encode: %v", name, arg, err)
		}
	})
}
