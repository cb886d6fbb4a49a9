package correlate

import "github.com/weftobs/weft/streams/schema"

// ended publishes a pod a delete ended to CALLS, next to the calls, so the
// graph (rebuilt from CALLS, which outlives EVENTS) ends it too. Every
// partition reads every node's pod events; partition 0 alone publishes
// what they end, so a delete goes to CALLS once (once more only when its
// EVENTS message is redelivered, which the graph takes as the same end).
// Its EVENTS message is acked, as a call's is, only after the publisher's
// Flush.
func (p *part) ended(e *schema.PodEnded) error {
	if p.k != 0 {
		return nil
	}
	node := e.GetPod().GetNode()
	if node == "" {
		node = p.s.set.Node
	}
	return p.pub.Publish(p.ctx, schema.CallSubject(node), e)
}
