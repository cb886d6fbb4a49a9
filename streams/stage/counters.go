package stage

import "sync/atomic"

// Counters are what a stage counts. They are plain atomics so the hot path
// pays one atomic add per batch; the runner reads them for /metrics and the
// live display. All fields are safe for concurrent use.
type Counters struct {
	// EventsIn counts events (not messages) the stage consumed.
	EventsIn atomic.Uint64
	// EventsOut counts events the stage published (accepted by the server).
	EventsOut atomic.Uint64
	// MessagesIn counts stream messages the stage consumed.
	MessagesIn atomic.Uint64
	// Acked counts stream messages acked after their effect was durable.
	Acked atomic.Uint64
	// Redelivered counts messages delivered more than once.
	Redelivered atomic.Uint64
	// DLQ counts messages sent to the DLQ stream.
	DLQ atomic.Uint64
	// Dropped counts events dropped because a bound was reached (publisher
	// buffer full, state evicted); never silent.
	Dropped atomic.Uint64
	// Errors counts processing errors that led to a retry.
	Errors atomic.Uint64
	// Lost counts events lost before weft could see them (a kernel ring
	// buffer that was full); collectors read it from the kernel.
	Lost atomic.Uint64
	// Untracked counts connections a collector saw close without having
	// seen them open (open before it started, or forgotten past its
	// socket bound): their totals were not reported.
	Untracked atomic.Uint64
}

// Snapshot is a point-in-time copy of Counters.
type Snapshot struct {
	EventsIn, EventsOut, MessagesIn, Acked, Redelivered, DLQ, Dropped, Errors, Lost, Untracked uint64
}

// Snapshot reads every counter.
func (c *Counters) Snapshot() Snapshot {
	return Snapshot{
		EventsIn: c.EventsIn.Load(), EventsOut: c.EventsOut.Load(), MessagesIn: c.MessagesIn.Load(),
		Acked: c.Acked.Load(), Redelivered: c.Redelivered.Load(), DLQ: c.DLQ.Load(),
		Dropped: c.Dropped.Load(), Errors: c.Errors.Load(), Lost: c.Lost.Load(),
		Untracked: c.Untracked.Load(),
	}
}
