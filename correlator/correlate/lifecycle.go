package correlate

import (
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// ended publishes a pod a delete ended to CALLS, next to the calls, so the
// graph (rebuilt from CALLS, which outlives EVENTS) ends it too.
func (p *part) ended(e *schema.PodEnded) error { return p.podNews(e.GetPod(), e) }

// changed publishes a pod announced again with something new about it (a
// container's name and image) to CALLS, so the graph learns it even when
// the pod makes no call after the change (a client that called at once
// and exited).
func (p *part) changed(e *schema.PodChanged) error { return p.podNews(e.GetPod(), e) }

// rebuiltNews publishes what the pod events of message seq, applied by
// the rebuild, say to the graph (part.news), once.
func (p *part) rebuiltNews(seq uint64) error {
	for _, n := range p.news[seq] {
		var err error
		switch n := n.(type) {
		case *schema.PodEnded:
			err = p.ended(n)
		case *schema.PodChanged:
			err = p.changed(n)
		}
		if err != nil {
			return err
		}
	}
	delete(p.news, seq)
	return nil
}

// podNews publishes news of pod to CALLS. Every partition reads every
// node's pod events; partition 0 alone publishes what they say, so the news
// goes to CALLS once (once more only when its EVENTS message is
// redelivered, which the graph takes as the same news; a partition 0 that
// moved publishes it from its rebuild: Stage.rebuildPods). Its EVENTS message
// is acked, as a call's is, only after the publisher's Flush.
func (p *part) podNews(pod *schema.Pod, news proto.Message) error {
	if p.k != 0 {
		return nil
	}
	node := pod.GetNode()
	if node == "" {
		node = p.s.set.Node
	}
	return p.pub.Publish(p.ctx, schema.CallSubject(node), news)
}
