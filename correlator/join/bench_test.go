package join_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/internal/scenario"
	"github.com/weftobs/weft/correlator/join"
	"github.com/weftobs/weft/streams/schema"
)

func encoded(b *testing.B) ([][]byte, int) {
	c := scenario.NewCluster()
	sim := scenario.New()
	c.Up(sim)
	c.Traffic(sim, 20000, 3e6)
	var out [][]byte
	n := 0
	for _, bt := range sim.Interleaved(1024) {
		data, err := proto.Marshal(bt)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, data)
		n += len(bt.GetEvents())
	}
	return out, n
}

// BenchmarkCorrelate: EVENTS message bodies → decoded → joined → each call
// encoded as the publisher would, against the baseline of decoding alone.
func BenchmarkCorrelate(b *testing.B) {
	msgs, n := encoded(b)
	b.Run("baseline-decode", func(b *testing.B) {
		for b.Loop() {
			for _, m := range msgs {
				if _, err := schema.DecodeEventBatch(m); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("correlate", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			j := join.New(join.Config{Emit: func(c *schema.Call) error {
				var err error
				buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], c)
				return err
			}})
			for _, m := range msgs {
				bt, err := schema.DecodeEventBatch(m)
				if err != nil {
					b.Fatal(err)
				}
				h := &join.Hold{}
				for _, ev := range bt.GetEvents() {
					if err := j.Feed(bt.GetOrigin().GetNode(), ev, h); err != nil {
						b.Fatal(err)
					}
				}
				if err := j.Advance(0); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
