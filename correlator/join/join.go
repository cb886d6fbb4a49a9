// Package join is the correlator's fold: it joins the client side of a
// connection (connect) with its server side (accept) — on different nodes,
// through a Service VIP — and the two ends of a unix-socket connection, and
// turns each connection into calls with both endpoints resolved to pod /
// container / process as of the event's time.
//
// A connection closed by the time both its sides are known (the collector
// reports it at close, or its connect/accept came in the same message as
// its close) is one call, a whole connection. A connection still open
// when its sides are known — the collector's sweep reported its
// connect/accept while it was still open (TCPEvent.still_open) — is
// emitted while it lives: OPEN as soon as both sides are in, or once the
// window has passed for a side with no partner; PROGRESS each
// time its bytes grow (the collector's periodic reads, from the side that
// drives its bytes: the client's when the client is seen); CLOSE at its
// close. Every emission carries the totals the connection's earlier
// emissions carried (prior_bytes_*), so a consumer adds only the
// difference and counts the OPEN: a connection counts once however long
// it lives, with its latest totals. See docs/open-connections.md.
//
// Time is event time: a half waits for its partner until the watermark (the
// latest event time seen, advanced by wall time only when the input is
// idle) passes its deadline, so a replay of the same events yields the same
// calls with the same ids.
//
// State is bounded: at most MaxConnections connection sides are kept, least
// recently touched evicted first, every eviction counted. A Joiner is not
// safe for concurrent use. It owns no I/O: calls go to the Emit callback.
package join

import (
	"container/heap"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/podindex"
	"github.com/weftobs/weft/streams/schema"
)

// Config configures a Joiner.
type Config struct {
	// Window is how far apart (event time) the two sides of a connection
	// may start and still be joined, and how long a closed side with no
	// partner waits for one before it becomes a call to an External peer.
	Window time.Duration
	// CloseWait is how long a closed side whose partner is known but still
	// open waits for the partner's close before the call is emitted from
	// the closed side alone (its byte totals are the connection's).
	CloseWait time.Duration
	// MaxConnections bounds the connection sides held.
	MaxConnections int
	// Emit receives every call. The call is only valid during the call.
	Emit func(*schema.Call) error
	// Ended, when set, receives every pod a delete ends (once per pod),
	// as it was last announced, with the delete's time. Its error is
	// returned by Feed as Emit's is.
	Ended func(*schema.PodEnded) error
	// Changed, when set, receives every pod announced again with
	// something new about it (podindex.Index.Apply), with the
	// announcement's time. Its error is returned by Feed as Emit's is.
	Changed func(*schema.PodChanged) error
}

func (c *Config) setDefaults() {
	if c.Window <= 0 {
		c.Window = time.Second
	}
	if c.CloseWait <= 0 {
		c.CloseWait = 5 * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1 << 20
	}
}

// Stats are what the joiner counted.
type Stats struct {
	Calls        uint64 // calls emitted
	Joined       uint64 // with both sides seen
	Partial      uint64 // with one side seen (peer External or resolved by address)
	Failed       uint64 // failed connects
	Unix         uint64 // unix-socket calls
	Opened       uint64 // connections emitted OPEN (counted while open)
	Progress     uint64 // PROGRESS emissions
	ClosedOpen   uint64 // CLOSE emissions (connections emitted OPEN before)
	Resumed      uint64 // sides first seen by a progress or a close after their open was reported elsewhere (a restart, an eviction)
	Duplicates   uint64 // events for a side already in that state (redelivery)
	LateCloses   uint64 // closes of a side whose call was already emitted
	EvictedOpen  uint64 // open sides evicted by the bound (emitted OPEN first when they were not; later events resume them)
	EvictedEmit  uint64 // closed sides evicted by the bound (emitted early)
	Malformed    uint64 // events rejected by Feed
	Pods         uint64 // pod events applied
	Ignored      uint64 // events the joiner does not use (exec, exit)
	Held         int    // sides held now
	EmitFailures uint64
}

// Add returns the sum of a and b (Held included): the figures of several
// joiners, one per partition a replica reads.
func (a Stats) Add(b Stats) Stats {
	a.Calls += b.Calls
	a.Joined += b.Joined
	a.Partial += b.Partial
	a.Failed += b.Failed
	a.Unix += b.Unix
	a.Opened += b.Opened
	a.Progress += b.Progress
	a.ClosedOpen += b.ClosedOpen
	a.Resumed += b.Resumed
	a.Duplicates += b.Duplicates
	a.LateCloses += b.LateCloses
	a.EvictedOpen += b.EvictedOpen
	a.EvictedEmit += b.EvictedEmit
	a.Malformed += b.Malformed
	a.Pods += b.Pods
	a.Ignored += b.Ignored
	a.Held += b.Held
	a.EmitFailures += b.EmitFailures
	return a
}

// Hold counts the events of one source message that are still parked in
// the joiner — closes waiting for their partner, connects/accepts and
// progress of sides whose call is not out yet: the message may be acked
// only once Pending is zero and the calls emitted so far are durable. The
// caller owns it; the joiner only counts.
type Hold struct{ pending int }

// Pending is the number of the message's events not yet in a call.
func (h *Hold) Pending() int {
	if h == nil {
		return 0
	}
	return h.pending
}

// ErrMalformed wraps every reason Feed rejects an event.
var ErrMalformed = errors.New("malformed event")

type clientKey struct {
	ap netip.AddrPort
	// Loopback addresses are only unique within a network namespace.
	node string
	ns   uint64
}

type sideKey struct {
	node   string
	cookie uint64
}

type side struct {
	key       sideKey
	ck        clientKey
	role      schema.Role
	task      *schema.Task
	local     netip.AddrPort
	remote    netip.AddrPort
	start     uint64
	closed    bool
	closeTime uint64
	sent      uint64
	recv      uint64
	dur       uint64
	errno     int32 // a failed connect
	partner   *side
	emitted   bool // its call is out; kept only to swallow a late close
	candidate bool // listed in byClient
	hold      *Hold

	// An open connection's side. opened: its connect/accept was fed here,
	// so its call's OPEN is this joiner's to send. resumed: first seen by
	// a progress or a close whose open was reported before (its call was
	// counted by an earlier run or before an eviction). live: its call
	// is out as an open connection. drives: its totals are the call's
	// bytes (the client's when the client is seen). base is what the
	// call's emissions carried before this joiner saw the side, cur its
	// latest totals (its own view: sent, received); last is the time of
	// its latest event, emitEnd that of its call's latest emission.
	opened, resumed, live, drives bool
	base, cur                     [2]uint64
	last, emitEnd                 uint64
	holds                         []*Hold // its open and progress events' messages, until live

	deadline uint64
	hidx     int // index in the deadline heap, -1 when not in it
	prev     *side
	next     *side
}

// Joiner joins connection events into calls.
type Joiner struct {
	cfg      Config
	window   uint64
	wait     uint64
	pods     *podindex.Index
	sides    map[sideKey]*side
	byClient map[clientKey][]*side
	unixDone map[unixKey]struct{}
	unixFIFO []unixKey
	tcpDone  map[sideKey]doneSide // TCP sides whose close is in a call; see over
	tcpFIFO  []doneSide
	dl       deadlines
	lru      side // sentinel of the LRU list; lru.next is the oldest
	mark     uint64
	stats    Stats
	call     schema.Call
	cli, srv schema.Endpoint
}

// doneSide is a side that is over, and when it closed.
type doneSide struct {
	key    sideKey
	closed uint64
}

type unixKey struct {
	node   string
	lo, hi uint64
}

// New returns a Joiner.
func New(cfg Config) *Joiner {
	cfg.setDefaults()
	j := &Joiner{
		cfg: cfg, window: uint64(cfg.Window), wait: uint64(cfg.CloseWait),
		pods:     podindex.New(0, 0),
		sides:    map[sideKey]*side{},
		byClient: map[clientKey][]*side{},
		unixDone: map[unixKey]struct{}{},
		tcpDone:  map[sideKey]doneSide{},
	}
	j.lru.prev, j.lru.next = &j.lru, &j.lru
	return j
}

// Stats returns the counts so far.
func (j *Joiner) Stats() Stats {
	s := j.stats
	s.Held = len(j.sides)
	return s
}

// Watermark is the latest event time seen (Unix nanoseconds).
func (j *Joiner) Watermark() uint64 { return j.mark }

// Pods is the pod history the joiner resolves with.
func (j *Joiner) Pods() *podindex.Index { return j.pods }

// ApplyPod applies pod event pe, seen at t, to the pod index as Feed does,
// and returns the news Feed gives Config.Ended or Config.Changed (a
// *schema.PodEnded or a *schema.PodChanged), or nil, without giving it.
func (j *Joiner) ApplyPod(t uint64, pe *schema.PodEvent) proto.Message {
	changed, ended := j.pods.Apply(t, pe)
	switch {
	case ended != nil:
		return &schema.PodEnded{Pod: ended, EndedUnixNano: t}
	case changed != nil:
		return &schema.PodChanged{Pod: changed, ChangedUnixNano: t}
	}
	return nil
}

// Feed processes one event from node. A close that cannot become a call yet
// is parked and counted in h until it does. Feed returns an error wrapping
// ErrMalformed for an event it cannot use; the joiner's state is unchanged
// by it. Emit errors are returned as they are.
func (j *Joiner) Feed(node string, ev *schema.Event, h *Hold) error {
	t := ev.GetTimeUnixNano()
	var err error
	switch b := ev.GetBody().(type) {
	case *schema.Event_Tcp:
		err = j.tcp(node, t, ev.GetTask(), b.Tcp, h)
	case *schema.Event_Unix:
		err = j.unix(node, t, ev.GetTask(), b.Unix)
	case *schema.Event_Pod:
		if b.Pod.GetPod().GetUid() == "" {
			err = fmt.Errorf("%w: pod event without pod uid", ErrMalformed)
			break
		}
		j.stats.Pods++
		switch n := j.ApplyPod(t, b.Pod).(type) {
		case *schema.PodEnded:
			if j.cfg.Ended != nil {
				err = j.cfg.Ended(n)
			}
		case *schema.PodChanged:
			if j.cfg.Changed != nil {
				err = j.cfg.Changed(n)
			}
		}
	case nil:
		err = fmt.Errorf("%w: event without body", ErrMalformed)
	default:
		j.stats.Ignored++
	}
	if errors.Is(err, ErrMalformed) {
		j.stats.Malformed++
		return err
	}
	if err != nil {
		return err
	}
	if t > j.mark {
		j.mark = t
	}
	return nil
}

func addrPort(b []byte, port uint32, what string) (netip.AddrPort, error) {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: %s address has %d bytes, want 4 or 16", ErrMalformed, what, len(b))
	}
	if port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s port %d", ErrMalformed, what, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

func (j *Joiner) tcp(node string, t uint64, task *schema.Task, e *schema.TCPEvent, h *Hold) error {
	local, err := addrPort(e.GetLocalAddr(), e.GetLocalPort(), "local")
	if err != nil {
		return err
	}
	remote, err := addrPort(e.GetRemoteAddr(), e.GetRemotePort(), "remote")
	if err != nil {
		return err
	}
	role := e.GetRole()
	phase := e.GetPhase()
	switch phase {
	case schema.TCPPhase_TCP_PHASE_CONNECT:
		role = schema.Role_ROLE_CLIENT
	case schema.TCPPhase_TCP_PHASE_ACCEPT:
		role = schema.Role_ROLE_SERVER
	case schema.TCPPhase_TCP_PHASE_CLOSE, schema.TCPPhase_TCP_PHASE_PROGRESS:
		if role != schema.Role_ROLE_CLIENT && role != schema.Role_ROLE_SERVER {
			return fmt.Errorf("%w: tcp %v without role", ErrMalformed, phase)
		}
	case schema.TCPPhase_TCP_PHASE_CONNECT_FAILED:
		return j.failed(node, t, task, e, local, remote, h)
	default:
		return fmt.Errorf("%w: tcp phase %v", ErrMalformed, phase)
	}
	if e.GetSockCookie() == 0 {
		return fmt.Errorf("%w: tcp %v without socket cookie", ErrMalformed, phase)
	}
	open := phase == schema.TCPPhase_TCP_PHASE_CONNECT || phase == schema.TCPPhase_TCP_PHASE_ACCEPT
	totals := [2]uint64{e.GetBytesSent(), e.GetBytesReceived()}
	prior := [2]uint64{e.GetPriorBytesSent(), e.GetPriorBytesReceived()}
	key := sideKey{node, e.GetSockCookie()}
	s := j.sides[key]
	if s == nil && j.isOver(key, t) {
		j.stats.Duplicates++
		return nil
	}
	if s == nil {
		start := e.GetStartUnixNano()
		if start == 0 {
			start = t
		}
		s = &side{key: key, role: role, task: task, local: local, remote: remote, start: start, hidx: -1, last: t}
		s.ck = clientKey{ap: local}
		if role == schema.Role_ROLE_SERVER {
			s.ck.ap = remote
		}
		if s.ck.ap.Addr().IsLoopback() {
			s.ck.node, s.ck.ns = node, e.GetNetNs()
		}
		s.opened = open && e.GetStillOpen()
		if !open && (phase == schema.TCPPhase_TCP_PHASE_PROGRESS || e.GetOpenReported()) {
			// Its open went by in an earlier message, which was acked
			// only once its call was out: this side resumes that call.
			s.resumed, s.base, s.cur = true, prior, prior
			j.stats.Resumed++
		}
		j.sides[key] = s
		j.pushLRU(s)
		j.pair(s)
		switch {
		case s.partner == nil && s.opened:
			// A side alone goes out as a partial call once the window
			// has passed without a partner.
			j.schedule(s, max(t, start)+j.window)
		case s.partner == nil && s.resumed && phase == schema.TCPPhase_TCP_PHASE_PROGRESS:
			// Resumed (after a restart or an eviction): its partner's
			// next progress may come from a node whose messages lag by
			// up to a progress interval, so it waits CloseWait for it.
			j.schedule(s, t+j.wait)
		}
		if err := j.bound(); err != nil {
			return err
		}
	} else {
		j.touch(s)
		if s.task == nil {
			s.task = task
		}
		s.last = max(s.last, t)
		if s.role != role {
			return nil // a cookie reused with another role: keep the first
		}
		if open {
			if s.opened || !e.GetStillOpen() {
				j.stats.Duplicates++ // a redelivered open
				return nil
			}
			// The open of a side first seen by its progress: its message
			// came back, so the call's OPEN may not be durable. It goes
			// out again (the same id: a consumer keeps one).
			s.opened = true
			if s.live && !s.emitted {
				return j.open(s, s.partner, false)
			}
			return nil
		}
	}
	if phase == schema.TCPPhase_TCP_PHASE_PROGRESS {
		if err := j.progress(s, t, totals, h); err != nil {
			return err
		}
		if p := s.partner; !s.live && !s.closed && p != nil && !p.closed && !p.live && (p.opened || p.resumed) {
			return j.goLive(s, p)
		}
		return nil
	}
	if open {
		if !s.opened {
			return nil
		}
		if p := s.partner; p != nil && !p.closed && !p.live && (p.opened || p.resumed) {
			return j.goLive(s, p)
		}
		if !s.live {
			s.holds = append(s.holds, h)
			h.pending++
		}
		return nil
	}
	switch {
	case s.emitted:
		j.stats.LateCloses++
		j.over(s, t)
		return nil
	case s.closed:
		j.stats.Duplicates++
		return nil
	}
	s.closed, s.closeTime = true, t
	s.sent, s.recv, s.dur = e.GetBytesSent(), e.GetBytesReceived(), e.GetDurationNs()
	if s.live {
		return j.closeLive(s, t, h)
	}
	if p := s.partner; p != nil && p.closed {
		j.release(p)
		if s.resumed || p.resumed {
			return j.closeOpen(s, p)
		}
		return j.emit(s, p)
	}
	s.hold = h
	h.pending++
	if s.partner != nil {
		j.schedule(s, t+j.wait)
	} else {
		j.schedule(s, t+j.window)
	}
	return nil
}

// progress takes a side's totals so far: the call's PROGRESS when the
// side drives a call that is out, else they wait in the side (with the
// message) for its call.
func (j *Joiner) progress(s *side, t uint64, totals [2]uint64, h *Hold) error {
	if s.closed || s.emitted {
		j.stats.LateCloses++
		return nil
	}
	if totals[0] < s.cur[0] || totals[1] < s.cur[1] || totals == s.cur {
		j.stats.Duplicates++ // redelivered, or older than what is known
		return nil
	}
	if !s.live {
		s.cur = totals
		s.holds = append(s.holds, h)
		h.pending++
		return nil
	}
	if !s.drives {
		s.cur = totals
		return nil
	}
	prior := s.cur
	s.cur = totals
	return j.emitOpen(s, s.partner, schema.CallState_CALL_STATE_PROGRESS, prior, t)
}

// ends returns s and p as client and server.
func (j *Joiner) ends(s, p *side) (cli, srv *side) {
	if s.role == schema.Role_ROLE_SERVER {
		return p, s
	}
	return s, p
}

// goLive puts the call of open side s (and its partner p, nil if none)
// out as an open connection: its OPEN, unless both sides resume a call
// counted before (then what they read meanwhile, as PROGRESS).
func (j *Joiner) goLive(s, p *side) error {
	cli, srv := j.ends(s, p)
	drive := cli
	if drive == nil {
		drive = srv
	}
	for _, x := range []*side{cli, srv} {
		if x == nil {
			continue
		}
		x.live = true
		x.drives = x == drive
		j.unlist(x)
		if x.hidx >= 0 && !x.closed {
			heap.Remove(&j.dl, x.hidx)
		}
		for _, h := range x.holds {
			h.pending--
		}
		x.holds = nil
	}
	t := drive.last
	if p != nil {
		t = max(t, p.last)
	}
	if s.opened || (p != nil && p.opened) {
		return j.open(s, p, true)
	}
	if drive.cur == drive.base {
		return nil
	}
	return j.emitOpen(s, p, schema.CallState_CALL_STATE_PROGRESS, drive.base, t)
}

// open sends the OPEN of a live call: it counts the connection, with the
// bytes its driving side read so far when withBytes (else none: they
// went out as PROGRESS).
func (j *Joiner) open(s, p *side, withBytes bool) error {
	cli, srv := j.ends(s, p)
	drive := cli
	if drive == nil {
		drive = srv
	}
	t := drive.last
	if p != nil {
		t = max(t, p.last)
	}
	prior := drive.base
	if !withBytes {
		prior = drive.cur
	}
	return j.emitOpen(s, p, schema.CallState_CALL_STATE_OPEN, prior, t)
}

// closeLive closes side s of a live call: its driving side's close is
// the call's CLOSE; the other side's waits CloseWait for it.
func (j *Joiner) closeLive(s *side, t uint64, h *Hold) error {
	p := s.partner
	if s.drives || p == nil {
		return j.closeOpen(s, p)
	}
	if p.closed {
		j.release(p)
		return j.closeOpen(p, s)
	}
	s.hold = h
	h.pending++
	j.schedule(s, t+j.wait)
	return nil
}

// closeOpen sends the CLOSE of a call emitted open, from closed side s's
// totals, and forgets s (and p once it is closed; an open p stays only
// to swallow its own close).
func (j *Joiner) closeOpen(s, p *side) error {
	drive := s
	if !s.drives && p != nil && p.drives {
		drive = p
	}
	prior := drive.cur
	if s.role != drive.role {
		prior[0], prior[1] = prior[1], prior[0]
	}
	s.cur = [2]uint64{s.sent, s.recv}
	j.stats.ClosedOpen++
	err := j.emitOpen(s, p, schema.CallState_CALL_STATE_CLOSE, prior, s.closeTime)
	j.over(s, s.closeTime)
	if p != nil {
		if p.closed {
			j.over(p, p.closeTime)
		} else {
			p.emitted = true
		}
	}
	return err
}

// emitOpen sends one emission of an open connection's call: state, the
// totals of s (in its role's view; a CLOSE's own, else its driving
// side's) and the prior totals the call's earlier emissions carried, at
// time t.
func (j *Joiner) emitOpen(s, p *side, state schema.CallState, prior [2]uint64, t uint64) error {
	drive := s
	if state != schema.CallState_CALL_STATE_CLOSE && !s.drives && p != nil {
		drive = p
	}
	c := j.build(s, p, state == schema.CallState_CALL_STATE_OPEN)
	cli, srv := j.ends(s, p)
	c.State = state
	tot := drive.cur
	if drive.role == schema.Role_ROLE_CLIENT {
		c.BytesSent, c.BytesReceived = tot[0], tot[1]
		c.PriorBytesSent, c.PriorBytesReceived = prior[0], prior[1]
	} else {
		c.BytesSent, c.BytesReceived = tot[1], tot[0]
		c.PriorBytesSent, c.PriorBytesReceived = prior[1], prior[0]
	}
	start := drive.start
	if cli != nil {
		start = cli.start
	} else if srv != nil {
		start = srv.start
	}
	c.StartUnixNano = start
	c.EndUnixNano = max(t, start)
	c.SinceUnixNano = drive.emitEnd
	if drive.emitEnd == 0 && state != schema.CallState_CALL_STATE_OPEN && !drive.resumed {
		c.SinceUnixNano = start
	}
	drive.emitEnd = c.EndUnixNano
	if p != nil {
		p.emitEnd = c.EndUnixNano
	}
	switch state {
	case schema.CallState_CALL_STATE_OPEN:
		j.stats.Opened++
	case schema.CallState_CALL_STATE_PROGRESS:
		j.stats.Progress++
		b := make([]byte, 0, len(c.Id)+36)
		b = append(b, c.Id...)
		b = append(b, "#p"...)
		b = strconv.AppendUint(b, c.BytesSent, 16)
		b = append(b, '.')
		b = strconv.AppendUint(b, c.BytesReceived, 16)
		c.Id, c.Halves = string(b), nil
	case schema.CallState_CALL_STATE_CLOSE:
		c.Id, c.Halves = c.Id+"#c", nil
	}
	return j.send(c)
}

// pair looks for s's other side among the unpaired sides with its client
// address, started within the window; without one, s becomes a candidate.
func (j *Joiner) pair(s *side) {
	cands := j.byClient[s.ck]
	best := -1
	var bestGap uint64
	for i, c := range cands {
		if c.role == s.role || c.partner != nil {
			continue
		}
		gap := absDiff(c.start, s.start)
		if gap > j.window {
			continue
		}
		if best < 0 || gap < bestGap {
			best, bestGap = i, gap
		}
	}
	if best < 0 {
		s.candidate = true
		j.byClient[s.ck] = append(cands, s)
		return
	}
	p := cands[best]
	j.unlist(p)
	s.partner, p.partner = p, s
	// A closed partner waiting for a peer now waits for s's close instead.
	if p.closed && p.hidx >= 0 {
		j.schedule(p, p.closeTime+j.wait)
	}
	// An open partner no longer waits to go out alone: the pair goes out
	// open now (see tcp), unless one of them is closed.
	if !p.closed && p.hidx >= 0 {
		heap.Remove(&j.dl, p.hidx)
	}
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

func (j *Joiner) unlist(s *side) {
	if !s.candidate {
		return
	}
	s.candidate = false
	cands := j.byClient[s.ck]
	for i, c := range cands {
		if c == s {
			cands = append(cands[:i], cands[i+1:]...)
			break
		}
	}
	if len(cands) == 0 {
		delete(j.byClient, s.ck)
	} else {
		j.byClient[s.ck] = cands
	}
}

// release un-parks s: its close no longer waits.
func (j *Joiner) release(s *side) {
	if s.hold != nil {
		s.hold.pending--
		s.hold = nil
	}
	if s.hidx >= 0 {
		heap.Remove(&j.dl, s.hidx)
	}
}

func (j *Joiner) remove(s *side) {
	j.release(s)
	for _, h := range s.holds {
		h.pending--
	}
	s.holds = nil
	j.unlist(s)
	if p := s.partner; p != nil && p.partner == s {
		p.partner = nil
	}
	s.prev.next, s.next.prev = s.next, s.prev
	s.prev, s.next = nil, nil
	delete(j.sides, s.key)
}

// over forgets closed side s, whose close (at t) is in a call, and
// remembers it: another copy of one of its events, of any time up to
// CloseWait after its close, is then a duplicate, not a new connection.
// Two collectors on one node (a DaemonSet's rollout with maxSurge: the
// new one runs before the old one stops) report every socket twice, each
// copy under its own start time (so its own call id), in two publishers'
// messages that reach the joiner in any order. While a side is held its
// copies are swallowed (Duplicates); once its call is out, this does it.
// Socket cookies are unique within a node's boot only, hence the time
// bound: a cookie seen again after a reboot is a new connection. Sides
// are remembered overKeep behind the watermark (one collector's messages
// may lag the other's by that much), never more than MaxConnections.
func (j *Joiner) over(s *side, t uint64) {
	j.remove(s)
	d := doneSide{s.key, t}
	j.tcpDone[s.key] = d
	j.tcpFIFO = append(j.tcpFIFO, d)
	for len(j.tcpFIFO) > 0 {
		d := j.tcpFIFO[0]
		if len(j.tcpFIFO) <= j.cfg.MaxConnections && d.closed+overKeep >= j.mark {
			break
		}
		if j.tcpDone[d.key] == d {
			delete(j.tcpDone, d.key)
		}
		j.tcpFIFO = j.tcpFIFO[1:]
	}
}

// overKeep is how long (event time, behind the watermark) a side that is
// over is remembered.
const overKeep = uint64(30 * time.Second)

// isOver says whether an event at t for a side not held is a copy of an
// event of side key, which is over (see over): t no later than CloseWait
// after its close. (The copies' starts differ: a collector that found the
// socket open at its start-up scan starts it then.)
func (j *Joiner) isOver(key sideKey, t uint64) bool {
	d, ok := j.tcpDone[key]
	return ok && t <= d.closed+j.wait
}

func (j *Joiner) schedule(s *side, at uint64) {
	s.deadline = at
	if s.hidx >= 0 {
		heap.Fix(&j.dl, s.hidx)
		return
	}
	heap.Push(&j.dl, s)
}

// Advance moves the watermark to now if it is later and emits every call
// whose wait has ended.
func (j *Joiner) Advance(now uint64) error {
	if now > j.mark {
		j.mark = now
	}
	for len(j.dl) > 0 && j.dl[0].deadline <= j.mark {
		s := heap.Pop(&j.dl).(*side)
		if err := j.finish(s); err != nil {
			return err
		}
	}
	return nil
}

// finish emits the call of side s with what is known now: an open side
// alone goes out open (partial), a closed one closes its call.
func (j *Joiner) finish(s *side) error {
	j.release(s)
	p := s.partner
	if !s.closed {
		if s.live || (p != nil && !p.closed) {
			return nil
		}
		if p != nil {
			// Its partner closed, waiting for this side's close: the
			// close decides (after CloseWait).
			return nil
		}
		return j.goLive(s, nil)
	}
	if s.live || s.resumed || (p != nil && (p.live || p.resumed)) {
		return j.closeOpen(s, p)
	}
	if p == nil {
		return j.emit(s, nil)
	}
	// The partner is still open: the call goes out from s; p stays only to
	// swallow its own close later.
	p.emitted = true
	return j.emit(s, p)
}

// emit builds the whole call of closed side s (and its partner p, nil if
// none), sends it and forgets s (and p if it is closed too).
func (j *Joiner) emit(s, p *side) error {
	cli, srv := j.ends(s, p)
	c := j.build(s, p, true)
	// Totals come from a closed side; the client's view first.
	tot := cli
	if tot == nil || !tot.closed {
		tot = srv
	}
	if tot.role == schema.Role_ROLE_CLIENT {
		c.BytesSent, c.BytesReceived = tot.sent, tot.recv
	} else {
		c.BytesSent, c.BytesReceived = tot.recv, tot.sent
	}
	c.StartUnixNano = tot.start
	c.EndUnixNano = tot.start + tot.dur
	if tot.dur == 0 {
		c.EndUnixNano = tot.closeTime
	}
	j.over(s, s.closeTime)
	switch {
	case p != nil && p.closed:
		j.over(p, p.closeTime)
	case p != nil && !p.emitted:
		j.remove(p)
	}
	return j.send(c)
}

// build fills the joiner's call with what every emission of the call of
// s and p (nil if none) carries: its endpoints, id, port and halves;
// count says it is the emission that counts the connection (stats).
func (j *Joiner) build(s, p *side, count bool) *schema.Call {
	cli, srv := j.ends(s, p)
	c := &j.call
	*c = schema.Call{Transport: schema.Transport_TRANSPORT_TCP, Client: &j.cli, Server: &j.srv}
	j.cli, j.srv = schema.Endpoint{}, schema.Endpoint{}
	n := func(x *uint64) {
		if count {
			*x++
		}
	}
	switch {
	case cli != nil && srv != nil:
		j.local(&j.cli, cli)
		j.local(&j.srv, srv)
		c.Id = callID(cli)
		c.Port = uint32(srv.local.Port())
		if cli.remote != srv.local {
			c.DialedAddress, c.DialedPort = cli.remote.Addr().AsSlice(), uint32(cli.remote.Port())
		}
		n(&j.stats.Joined)
	case cli != nil:
		j.local(&j.cli, cli)
		j.peer(&j.srv, cli.remote, cli.start)
		c.Id = callID(cli)
		c.Port = uint32(cli.remote.Port())
		c.Partial = true
		if cli.errno != 0 {
			c.Errno = cli.errno
			c.Id = "fail" + c.Id[3:]
			n(&j.stats.Failed)
		}
		n(&j.stats.Partial)
	default:
		j.local(&j.srv, srv)
		j.peer(&j.cli, srv.remote, srv.start)
		c.Id = callID(srv)
		c.Port = uint32(srv.local.Port())
		c.Partial = true
		n(&j.stats.Partial)
	}
	if cli != nil {
		c.Halves = append(c.Halves, callID(cli))
	}
	if srv != nil {
		c.Halves = append(c.Halves, callID(srv))
	}
	return c
}

func (j *Joiner) send(c *schema.Call) error {
	j.stats.Calls++
	if j.cfg.Emit == nil {
		return nil
	}
	if err := j.cfg.Emit(c); err != nil {
		j.stats.EmitFailures++
		return fmt.Errorf("emit call %s: %w", c.GetId(), err)
	}
	return nil
}

// callID names a connection by the side that defines it, so correlating
// the same events twice gives the same id.
func callID(s *side) string {
	b := make([]byte, 0, len(s.key.node)+40)
	b = append(b, "tcp:"...)
	b = append(b, s.key.node...)
	b = append(b, ':')
	b = strconv.AppendUint(b, s.key.cookie, 16)
	b = append(b, ':')
	b = strconv.AppendUint(b, s.start, 16)
	return string(b)
}

// local fills e with a side's own end, attributed by its task.
func (j *Joiner) local(e *schema.Endpoint, s *side) {
	e.Node = s.key.node
	e.Address = s.local.Addr().AsSlice()
	e.Port = uint32(s.local.Port())
	j.attribute(e, s.task)
}

func (j *Joiner) attribute(e *schema.Endpoint, task *schema.Task) {
	e.Task = task
	if uid := task.GetPodUid(); uid != "" {
		if e.Pod = j.pods.Pod(uid); e.Pod == nil {
			e.Pod = &schema.Pod{Uid: uid}
		}
	}
	if id := task.GetContainerId(); id != "" {
		if e.Container = j.pods.Container(id); e.Container == nil {
			e.Container = &schema.Container{Id: id}
		}
	}
}

// peer fills e with the far end of a side nobody reported: the pod that held
// the address at the time, or External.
func (j *Joiner) peer(e *schema.Endpoint, ap netip.AddrPort, t uint64) {
	e.Address = ap.Addr().AsSlice()
	e.Port = uint32(ap.Port())
	if p := j.pods.PodAt(ap.Addr(), t); p != nil {
		e.Pod, e.Node = p, p.GetNode()
		return
	}
	e.External = true
}

// failed parks a failed connect like a closed side with no partner: it is
// emitted after the window, so the peer's address resolves with the pod
// metadata that arrived meanwhile.
func (j *Joiner) failed(node string, t uint64, task *schema.Task, e *schema.TCPEvent, local, remote netip.AddrPort, h *Hold) error {
	start := e.GetStartUnixNano()
	if start == 0 {
		start = t
	}
	cookie := e.GetSockCookie()
	if cookie == 0 {
		cookie = ^start
	}
	key := sideKey{node, cookie}
	if j.sides[key] != nil || j.isOver(key, t) {
		j.stats.Duplicates++
		return nil
	}
	errno := e.GetErrno()
	if errno == 0 {
		errno = -1 // failed, reason unknown: still an error
	}
	s := &side{key: key, role: schema.Role_ROLE_CLIENT, task: task, local: local, remote: remote, start: start,
		closed: true, closeTime: t, errno: errno, hidx: -1, hold: h}
	h.pending++
	j.sides[key] = s
	j.pushLRU(s)
	j.schedule(s, t+j.window)
	return j.bound()
}

func (j *Joiner) unix(node string, t uint64, task *schema.Task, e *schema.UnixEvent) error {
	// The collector sends one CONNECT per connection, from the client,
	// naming the server: that is the call (its ids: the client's socket
	// and the listener's). A CLOSE naming its peer (with totals) makes a
	// call too, keyed by both ends' sockets; a redelivered event is
	// swallowed.
	switch e.GetPhase() {
	case schema.UnixPhase_UNIX_PHASE_ACCEPT:
		return nil
	case schema.UnixPhase_UNIX_PHASE_CONNECT, schema.UnixPhase_UNIX_PHASE_CLOSE:
	default:
		return fmt.Errorf("%w: unix phase %v", ErrMalformed, e.GetPhase())
	}
	role := e.GetRole()
	if role != schema.Role_ROLE_CLIENT && role != schema.Role_ROLE_SERVER {
		return fmt.Errorf("%w: unix %v without role", ErrMalformed, e.GetPhase())
	}
	a, b := e.GetSockCookie(), e.GetPeerSockCookie()
	if a == 0 {
		return fmt.Errorf("%w: unix %v without socket cookie", ErrMalformed, e.GetPhase())
	}
	if a > b {
		a, b = b, a
	}
	k := unixKey{node, a, b}
	if _, done := j.unixDone[k]; done {
		j.stats.LateCloses++
		return nil
	}
	// Both ends are on this node and the event names the peer, so the
	// first close makes the call; the other end's close is swallowed.
	j.unixDone[k] = struct{}{}
	j.unixFIFO = append(j.unixFIFO, k)
	if len(j.unixFIFO) > j.cfg.MaxConnections {
		delete(j.unixDone, j.unixFIFO[0])
		j.unixFIFO = j.unixFIFO[1:]
	}
	c := &j.call
	*c = schema.Call{Transport: schema.Transport_TRANSPORT_UNIX, Client: &j.cli, Server: &j.srv, Path: e.GetPath()}
	j.cli, j.srv = schema.Endpoint{}, schema.Endpoint{}
	me, other := &j.cli, &j.srv
	c.BytesSent, c.BytesReceived = e.GetBytesSent(), e.GetBytesReceived()
	if role == schema.Role_ROLE_SERVER {
		me, other = other, me
		c.BytesSent, c.BytesReceived = c.BytesReceived, c.BytesSent
	}
	me.Node = node
	j.attribute(me, task)
	other.Node = node
	if peer := e.GetPeer(); peer != nil {
		j.attribute(other, peer)
	} else {
		other.External = true
		other.Address = []byte("unix:" + e.GetPath())
		c.Partial = true
	}
	c.StartUnixNano = e.GetStartUnixNano()
	if c.StartUnixNano == 0 {
		c.StartUnixNano = t
	}
	c.EndUnixNano = t
	if d := e.GetDurationNs(); d > 0 {
		c.EndUnixNano = c.StartUnixNano + d
	}
	c.Id = "unix:" + node + ":" + strconv.FormatUint(a, 16) + ":" + strconv.FormatUint(b, 16)
	j.stats.Unix++
	return j.send(c)
}

// LRU over every side, oldest at lru.next.
func (j *Joiner) pushLRU(s *side) {
	s.prev, s.next = j.lru.prev, &j.lru
	j.lru.prev.next = s
	j.lru.prev = s
}

func (j *Joiner) touch(s *side) {
	s.prev.next, s.next.prev = s.next, s.prev
	j.pushLRU(s)
}

// bound evicts the least recently touched sides past MaxConnections: a
// closed one is emitted with what is known; an open one goes out open if
// it was not (its later progress and close resume its call) and is
// dropped with its partner.
func (j *Joiner) bound() error {
	for len(j.sides) > j.cfg.MaxConnections {
		s := j.lru.next
		if s.closed && !s.emitted {
			j.stats.EvictedEmit++
			if err := j.finish(s); err != nil {
				return err
			}
			continue
		}
		if !s.emitted {
			j.stats.EvictedOpen++
			if p := s.partner; !s.live && (p == nil || !p.closed) {
				if err := j.goLive(s, p); err != nil {
					return err
				}
			}
			if p := s.partner; s.live && p != nil && !p.closed {
				j.stats.EvictedOpen++
				j.remove(p)
			}
		}
		if p := s.partner; p != nil && p.closed && !p.emitted {
			// Its partner is parked waiting for this side: let it go now,
			// while s still names the other end.
			if err := j.finish(p); err != nil {
				return err
			}
		}
		j.remove(s)
	}
	return nil
}

type deadlines []*side

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(a, b int) bool { return d[a].deadline < d[b].deadline }
func (d deadlines) Swap(a, b int) {
	d[a], d[b] = d[b], d[a]
	d[a].hidx, d[b].hidx = a, b
}
func (d *deadlines) Push(x any) {
	s := x.(*side)
	s.hidx = len(*d)
	*d = append(*d, s)
}
func (d *deadlines) Pop() any {
	old := *d
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	s.hidx = -1
	return s
}
