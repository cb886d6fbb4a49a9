package group_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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

// logLines collects a logger's records as "LEVEL msg".
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestSpare: a third member of a group over two partitions owns none and
// says so: Idle, and one warning however many rebalances pass; once a
// member leaves it takes a partition and is no longer idle.
func TestSpare(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	logs := map[string]*logLines{}
	join := func(name string, o *owner) *group.Group {
		logs[name] = &logLines{}
		g, err := group.Join(ctx, s.JS, group.Config{Stage: "corr", Partitions: 2, Member: name, Lease: time.Second, OnChange: o.set}, slog.New(logs[name]))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	var oa, ob, oc owner
	a, b := join("a", &oa), join("b", &ob)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !slices.Equal(oa.get(), []int{0}) || !slices.Equal(ob.get(), []int{1}) {
			return fmt.Errorf("a owns %v, b %v", oa.get(), ob.get())
		}
		return nil
	})
	c := join("c", &oc)
	const spare = "WARN no partition to own"
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if idle, members := c.Idle(); !idle || members != 3 {
			return fmt.Errorf("c idle %v with %d members, want idle with 3", idle, members)
		}
		return nil
	})
	// Several renewals (and rebalances, both every lease/4) later, still
	// one warning.
	kv, err := s.JS.KeyValue(ctx, group.Bucket("corr"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := kv.Get(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx, "c")
		if err != nil {
			return err
		}
		// Revisions count every member's puts: three members, four each.
		if e.Revision() < first.Revision()+12 {
			return fmt.Errorf("%d renewals so far", e.Revision()-first.Revision())
		}
		return nil
	})
	if n := logs["c"].count(spare); n != 1 {
		t.Errorf("c warned %d times while it stood by, want 1", n)
	}
	for name, g := range map[string]*group.Group{"a": a, "b": b} {
		if idle, _ := g.Idle(); idle {
			t.Errorf("%s owns %v and says it is idle", name, g.Owned())
		}
		if n := logs[name].count(spare); n != 0 {
			t.Errorf("%s owns partitions and warned %d times that it stands by", name, n)
		}
	}
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if idle, _ := c.Idle(); idle || len(oc.get()) == 0 {
			return fmt.Errorf("c owns %v after b left", oc.get())
		}
		return nil
	})
	if n := logs["c"].count(spare); n != 1 {
		t.Errorf("c warned %d times, want 1", n)
	}
	_ = a.Leave(ctx)
	_ = c.Leave(ctx)
}
