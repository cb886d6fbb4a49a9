// Package group shares a stream's partitions among the replicas of one
// stage, on JetStream alone: each replica renews its membership key in a
// KV bucket whose entries expire after the lease; the live members,
// sorted, get the partitions round-robin; and each partition's durable
// consumer is a pinned-client priority group (consume.Config.PinnedTTL),
// so that while two replicas disagree for a moment about who owns a
// partition, the server still delivers it to one.
//
// A replica holds its partitions only while its lease is valid: Valid is
// false once the last membership renewal the server took is older than
// the lease, measured on the replica's own monotonic clock, which runs on
// while the process is paused (SIGSTOP) — a paused replica resumes
// knowing it has lost its claim, and must not emit before it stops.
//
// Synadia's partitioned consumer groups (orbit.go pcgroups) were the first
// choice; they do not fit here: static groups need the partition number as
// the subjects' first token (weft's EVENTS subjects start with
// weft.events. for every other reader), elastic groups copy the stream
// into a work-queue stream (twice the bytes of EVENTS), and in both the
// membership is a list an operator edits, where a Deployment's replicas
// come and go by themselves. What they build on — pinned priority groups
// — is used here directly.
//
// It knows no stage kind.
package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a replica's membership.
type Config struct {
	// Stage names the group (the stage whose replicas share partitions).
	Stage string
	// Partitions is how many partitions there are (>= 1).
	Partitions int
	// Member is this replica's unique name (host name and a random part).
	Member string
	// Lease is how long a membership lasts without renewal; renewals
	// happen every Lease/4. Default 4s.
	Lease time.Duration
	// OnChange is called, from the group's goroutine, with the partitions
	// this replica owns whenever that set changes (an empty set when the
	// lease is lost). It must return only once partitions it no longer
	// owns are released.
	OnChange func(ctx context.Context, owned []int)
}

// Bucket is the KV bucket holding stage's members.
func Bucket(stage string) string { return "weft-group-" + strings.Map(keep, stage) }

func keep(r rune) rune {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		return r
	}
	return '_'
}

// Group is a replica's membership.
type Group struct {
	cfg Config
	kv  jetstream.KeyValue
	st  jetstream.Stream // the bucket's stream
	log *slog.Logger

	mu      sync.Mutex
	renewed time.Time // send time of the last renewal the server acked
	owned   []int
	members []string
	// idleTold: the replica was last seen owning nothing for want of a
	// partition, and said so.
	idleTold bool

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Join creates the bucket if needed, registers the member and starts
// renewing; OnChange gets the first assignment before Join returns.
func Join(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Group, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = 4 * time.Second
	}
	if cfg.Partitions < 1 {
		cfg.Partitions = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket(cfg.Stage), Description: "weft: live replicas of stage " + cfg.Stage,
		TTL: cfg.Lease, History: 1, Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("stage %s: group bucket %s: %w", cfg.Stage, Bucket(cfg.Stage), err)
	}
	st, err := js.Stream(ctx, "KV_"+Bucket(cfg.Stage))
	if err != nil {
		return nil, fmt.Errorf("stage %s: group bucket %s: %w", cfg.Stage, Bucket(cfg.Stage), err)
	}
	g := &Group{cfg: cfg, kv: kv, st: st, log: log, done: make(chan struct{})}
	if err := g.renew(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go g.loop(rctx)
	return g, nil
}

func (g *Group) key() string { return strings.Map(keep, g.cfg.Member) }

// errLapsed: the lease ran out while partitions were held; they must be
// released before the membership is renewed.
var errLapsed = errors.New("lease lapsed with partitions held")

// renew puts the member's key and, on success, extends the lease from
// the moment the put was sent. A lease that has lapsed while partitions
// are held is not renewed: the main loop releases them first, so nothing
// held under the old lease is published under the new one.
func (g *Group) renew(ctx context.Context) error {
	sent := time.Now()
	g.mu.Lock()
	lapsed := sent.Sub(g.renewed) >= g.cfg.Lease && len(g.owned) > 0
	g.mu.Unlock()
	if lapsed {
		return errLapsed
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/2)
	defer cancel()
	if _, err := g.kv.PutString(ctx, g.key(), g.cfg.Member); err != nil {
		return fmt.Errorf("stage %s: renew membership of %s: %w", g.cfg.Stage, g.cfg.Member, err)
	}
	g.mu.Lock()
	if sent.After(g.renewed) {
		g.renewed = sent
	}
	g.mu.Unlock()
	return nil
}

// renewLoop renews the membership every Lease/4, apart from the main
// loop, whose reassignments may take longer than a lease.
func (g *Group) renewLoop(ctx context.Context, lapsed chan<- struct{}) {
	t := time.NewTicker(g.cfg.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch err := g.renew(ctx); {
		case errors.Is(err, errLapsed):
			select {
			case lapsed <- struct{}{}:
			default:
			}
		case err != nil && ctx.Err() == nil:
			g.log.Warn("group renewal", "err", err)
		}
	}
}

// Valid reports whether the replica still holds its lease: the last
// renewal the server took was sent less than a lease ago. A replica
// must check it before every effect its partitions have (publishing).
func (g *Group) Valid() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return time.Since(g.renewed) < g.cfg.Lease
}

// Members are the live members last seen, sorted.
func (g *Group) Members() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.members)
}

// Owned is the partitions the replica owns now.
func (g *Group) Owned() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.owned)
}

func (g *Group) loop(ctx context.Context) {
	defer close(g.done)
	lapsed := make(chan struct{}, 1)
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		g.renewLoop(ctx, lapsed)
	}()
	defer func() { <-rdone }()
	t := time.NewTicker(g.cfg.Lease / 4)
	defer t.Stop()
	for {
		if !g.Valid() {
			// The lease ran out (the process was paused, or NATS was
			// away): release everything; renewal resumes after.
			g.release(ctx)
		} else {
			g.rebalance(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-lapsed:
		}
	}
}

func (g *Group) release(ctx context.Context) {
	g.mu.Lock()
	had := len(g.owned) > 0
	g.owned = nil
	g.mu.Unlock()
	if had {
		g.log.Warn("lease lost: partitions released", "member", g.cfg.Member)
		g.cfg.OnChange(ctx, nil)
	}
}

// Name is the member's name.
func (g *Group) Name() string { return g.cfg.Member }

// Stop stops renewing and reassigning, keeping the member's key (and so
// its partitions, for the others) until Leave or the lease's end. It is
// idempotent.
func (g *Group) Stop() {
	g.cancel()
	<-g.done
}

// Assign is the partitions of n that member owns among members (sorted):
// partition p goes to members[p mod len(members)].
func Assign(members []string, member string, n int) []int {
	i := slices.Index(members, member)
	if i < 0 {
		return nil
	}
	var out []int
	for p := i; p < n; p += len(members) {
		out = append(out, p)
	}
	return out
}

// live lists the members whose keys have not expired, in one request
// (the bucket stream's subjects): a listing through a KV watcher can come
// back short under load, and a member missing for a moment would move
// partitions for nothing.
func (g *Group) live(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Lease/2)
	defer cancel()
	prefix := "$KV." + Bucket(g.cfg.Stage) + "."
	info, err := g.st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, prefix))
	}
	return keys, nil
}

func (g *Group) rebalance(ctx context.Context) {
	var owned []int
	if g.Valid() {
		keys, err := g.live(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("group members", "err", err)
			}
			return // keep the assignment until the lease says otherwise
		}
		slices.Sort(keys)
		g.mu.Lock()
		g.members = keys
		g.mu.Unlock()
		owned = Assign(keys, g.key(), g.cfg.Partitions)
		if !g.Valid() {
			owned = nil
		}
	}
	g.mu.Lock()
	same := slices.Equal(owned, g.owned)
	g.owned = owned
	members := len(g.members)
	idle := len(owned) == 0 && members > g.cfg.Partitions
	tell := idle && !g.idleTold
	g.idleTold = idle
	g.mu.Unlock()
	if tell {
		// Said once each time the replica becomes a spare, not at every
		// rebalance; Idle says it for /readyz and metrics meanwhile.
		g.log.Warn("no partition to own: more replicas than partitions, this one stands by until another leaves",
			"members", members, "partitions", g.cfg.Partitions)
	}
	if !same {
		g.log.Info("partitions assigned", "owned", owned, "members", g.Members())
		g.cfg.OnChange(ctx, owned)
	}
}

// Idle reports whether the replica owns no partition because the live
// members outnumber the partitions (it stands by as a spare), with how
// many members it saw.
func (g *Group) Idle() (idle bool, members int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.owned) == 0 && len(g.members) > g.cfg.Partitions, len(g.members)
}

// Leave stops renewing and deletes the member's key, so the others take
// its partitions at once rather than after the lease. The caller releases
// its partitions first. Leave is idempotent.
func (g *Group) Leave(ctx context.Context) error {
	var err error
	g.once.Do(func() {
		g.Stop()
		// Purged, not deleted: a delete marker would list the member as
		// live until it expires.
		if derr := g.st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+Bucket(g.cfg.Stage)+"."+g.key())); derr != nil {
			err = fmt.Errorf("stage %s: leave group: %w", g.cfg.Stage, derr)
		}
	})
	return err
}
