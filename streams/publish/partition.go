package publish

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// ItemPublisher publishes one item to a subject; *Publisher is one.
type ItemPublisher interface {
	Publish(ctx context.Context, subject string, item proto.Message) error
}

// Partitioned wraps p so that a connection event published to
// weft.events.<node>.<kind> goes to its partition's subject
// weft.events.<node>.<kind>.<p> of n (schema.Partition). Batches are then
// made per partition, so one message never mixes partitions. Other items
// and subjects pass unchanged; with n <= 1 it is p itself.
func Partitioned(p ItemPublisher, n int) ItemPublisher {
	if n <= 1 {
		return p
	}
	return &partitioned{p: p, n: n, subj: map[string][]string{}}
}

type partitioned struct {
	p    ItemPublisher
	n    int
	mu   sync.Mutex
	subj map[string][]string // base subject → per-partition subjects
}

// Publish is safe for concurrent use if p's Publish is.
func (w *partitioned) Publish(ctx context.Context, subject string, item proto.Message) error {
	ev, ok := item.(*schema.Event)
	if !ok || !strings.HasPrefix(subject, schema.EventsPrefix) || !schema.Partitioned(subject[strings.LastIndexByte(subject, '.')+1:]) {
		return w.p.Publish(ctx, subject, item)
	}
	w.mu.Lock()
	subs := w.subj[subject]
	if subs == nil {
		subs = make([]string, w.n)
		for i := range subs {
			subs[i] = subject + "." + strconv.Itoa(i)
		}
		w.subj[subject] = subs
	}
	w.mu.Unlock()
	return w.p.Publish(ctx, subs[schema.Partition(ev, w.n)], item)
}
