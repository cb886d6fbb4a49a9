package group_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/group"
	"github.com/weftobs/weft/testenv/natstest"
)

func TestAssign(t *testing.T) {
	members := []string{"a", "b", "c"}
	cases := []struct {
		member string
		n      int
		want   []int
	}{
		{"a", 6, []int{0, 3}},
		{"b", 6, []int{1, 4}},
		{"c", 6, []int{2, 5}},
		{"c", 2, nil}, // more members than partitions: c stands by
		{"a", 1, []int{0}},
		{"x", 6, nil}, // not a member
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s of %d", c.member, c.n), func(t *testing.T) {
			if got := group.Assign(members, c.member, c.n); !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

type owner struct {
	mu    sync.Mutex
	owned []int
}

func (o *owner) set(_ context.Context, p []int) {
	o.mu.Lock()
	o.owned = p
	o.mu.Unlock()
}

func (o *owner) get() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owned
}

// TestMembersComeAndGo: two members split four partitions; one leaves and
// the other takes all at once; one stopped without leaving is dropped
// after its lease.
func TestMembersComeAndGo(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	join := func(name string, o *owner) *group.Group {
		g, err := group.Join(ctx, s.JS, group.Config{Stage: "corr", Partitions: 4, Member: name, Lease: time.Second, OnChange: o.set}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	wait := func(o *owner, want []int) {
		t.Helper()
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if got := o.get(); !slices.Equal(got, want) {
				return fmt.Errorf("owns %v, want %v", got, want)
			}
			return nil
		})
	}
	var oa, ob, oc owner
	a := join("a", &oa)
	wait(&oa, []int{0, 1, 2, 3})
	b := join("b", &ob)
	wait(&oa, []int{0, 2})
	wait(&ob, []int{1, 3})
	if !a.Valid() || !b.Valid() {
		t.Fatal("live members without a valid lease")
	}
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	wait(&oa, []int{0, 1, 2, 3})
	c := join("c", &oc)
	wait(&oc, []int{1, 3})
	wait(&oa, []int{0, 2})
	c.Stop() // as if killed: the key stays until the lease runs out
	stopped := time.Now()
	wait(&oa, []int{0, 1, 2, 3})
	if d := time.Since(stopped); d < 500*time.Millisecond {
		t.Errorf("c's partitions taken %v after it stopped, before its lease could run out", d)
	}
	if c.Valid() {
		natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if c.Valid() {
				return fmt.Errorf("stopped member still holds its lease")
			}
			return nil
		})
	}
	_ = a.Leave(ctx)
}
