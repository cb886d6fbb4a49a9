// Package decode turns the collector's ring-buffer records (the
// bpf2go-generated Collector* layouts) into schema events, enriching each
// task on the way. It is the user-space hot path: one Decoder per reader
// goroutine, no allocation per TCP event once warm.
package decode

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/streams/schema"
)

// Enricher attributes tasks; collectors/enrich implements it.
type Enricher interface {
	// Task fills exe, container, pod and attribution; it returns the pod
	// when known.
	Task(t *schema.Task) *schema.Pod
	Exec(pid uint32, exe string)
	Exit(pid uint32)
}

// Decoded is one decoded record. Everything it points to is owned by the
// Decoder and valid until the next Decode: publish (encode) it before then.
type Decoded struct {
	Event *schema.Event
	// Kind is the event's kind, the last token of its subject.
	Kind string
	// Pod is the task's pod when the metadata provider knows it.
	Pod *schema.Pod
	// Open, when not nil, is the connect/accept a TCP close stands for
	// (bpf.OpenOf): publish it, with the same kind, before Event.
	Open *schema.Event
}

// ErrShort is returned for a record shorter than its type's layout.
var ErrShort = errors.New("short record")

// Decoder decodes records. Not safe for concurrent use.
type Decoder struct {
	enr Enricher
	// monoToWall is added to a CLOCK_MONOTONIC timestamp to get Unix ns.
	monoToWall int64
	skKey      uint64

	ev         schema.Event
	task, peer schema.Task
	exec       schema.ProcessExec
	exit       schema.ProcessExit
	tcp        schema.TCPEvent
	open       schema.Event // the connect/accept a close stands for
	openTCP    schema.TCPEvent
	bOpen      schema.Event_Tcp
	unix       schema.UnixEvent
	bExec      schema.Event_Exec
	bExit      schema.Event_Exit
	bTCP       schema.Event_Tcp
	bUnix      schema.Event_Unix
	laddr      [16]byte
	raddr      [16]byte
	comms      map[[16]int8]string
}

// New returns a decoder enriching with enr.
func New(enr Enricher) *Decoder {
	d := &Decoder{enr: enr, comms: map[[16]int8]string{}}
	d.monoToWall = time.Now().UnixNano() - MonotonicNow()
	var k [8]byte
	_, _ = rand.Read(k[:])
	d.skKey = binary.LittleEndian.Uint64(k[:]) | 1
	d.bExec.Exec, d.bExit.Exit, d.bTCP.Tcp, d.bUnix.Unix = &d.exec, &d.exit, &d.tcp, &d.unix
	d.ev.Task = &d.task
	d.bOpen.Tcp = &d.openTCP
	d.open.Task, d.open.Body = &d.task, &d.bOpen
	return d
}

// MonotonicNow is CLOCK_MONOTONIC in ns, the clock of the records.
func MonotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Sizes of the record layouts.
var (
	sizeExec = int(unsafe.Sizeof(bpf.CollectorExecEvent{}))
	sizeExit = int(unsafe.Sizeof(bpf.CollectorExitEvent{}))
	sizeTCP  = int(unsafe.Sizeof(bpf.CollectorTcpEvent{}))
	sizeUnix = int(unsafe.Sizeof(bpf.CollectorUnixEvent{}))
	sizeHdr  = int(unsafe.Sizeof(bpf.CollectorTaskHdr{}))
)

// Decode decodes one record. rec must be 8-byte aligned (ring-buffer
// samples and Go allocations are).
func (d *Decoder) Decode(rec []byte) (Decoded, error) {
	if len(rec) < sizeHdr {
		return Decoded{}, fmt.Errorf("record of %d bytes: %w", len(rec), ErrShort)
	}
	typ := binary.LittleEndian.Uint32(rec[bpf.TypeOffset:])
	p := unsafe.Pointer(unsafe.SliceData(rec))
	switch typ {
	case bpf.TypeExec:
		if len(rec) < sizeExec {
			return Decoded{}, fmt.Errorf("exec record of %d bytes: %w", len(rec), ErrShort)
		}
		return d.decodeExec((*bpf.CollectorExecEvent)(p)), nil
	case bpf.TypeExit:
		if len(rec) < sizeExit {
			return Decoded{}, fmt.Errorf("exit record of %d bytes: %w", len(rec), ErrShort)
		}
		return d.decodeExit((*bpf.CollectorExitEvent)(p)), nil
	case bpf.TypeTCP:
		if len(rec) < sizeTCP {
			return Decoded{}, fmt.Errorf("tcp record of %d bytes: %w", len(rec), ErrShort)
		}
		return d.decodeTCP((*bpf.CollectorTcpEvent)(p)), nil
	case bpf.TypeUnix:
		if len(rec) < sizeUnix {
			return Decoded{}, fmt.Errorf("unix record of %d bytes: %w", len(rec), ErrShort)
		}
		return d.decodeUnix((*bpf.CollectorUnixEvent)(p)), nil
	}
	return Decoded{}, fmt.Errorf("unknown record type %d", typ)
}

func (d *Decoder) wall(mono uint64) uint64 { return uint64(int64(mono) + d.monoToWall) }

// fillTask sets every field of t from h (the Task is reused).
func (d *Decoder) fillTask(t *schema.Task, h *bpf.CollectorTaskHdr) {
	t.Pid, t.Tid, t.Ppid, t.Uid, t.CgroupId = h.Pid, h.Tid, h.Ppid, h.Uid, h.CgroupId
	t.Comm = d.comm(&h.Comm)
}

func (d *Decoder) comm(c *[16]int8) string {
	if s, ok := d.comms[*c]; ok {
		return s
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&c[0])), len(c))
	s := cstring(b)
	if len(d.comms) > 4096 {
		clear(d.comms)
	}
	d.comms[*c] = s
	return s
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func (d *Decoder) begin(h *bpf.CollectorTaskHdr) {
	d.ev.TimeUnixNano = d.wall(h.TsNs)
	d.fillTask(&d.task, h)
}

func (d *Decoder) decodeExec(r *bpf.CollectorExecEvent) Decoded {
	d.begin(&r.Hdr)
	fn := unsafe.Slice((*byte)(unsafe.Pointer(&r.Filename[0])), len(r.Filename))
	d.enr.Exec(r.Hdr.Pid, cstring(fn))
	argv := unsafe.Slice((*byte)(unsafe.Pointer(&r.Argv[0])), min(int(r.ArgvLen), len(r.Argv)))
	argv = bytes.TrimRight(argv, "\x00")
	d.exec.Argv = d.exec.Argv[:0]
	for len(argv) > 0 {
		i := bytes.IndexByte(argv, 0)
		if i < 0 {
			d.exec.Argv = append(d.exec.Argv, string(argv))
			break
		}
		d.exec.Argv = append(d.exec.Argv, string(argv[:i]))
		argv = argv[i+1:]
	}
	d.exec.ArgvTruncated = r.ArgvTruncated != 0
	d.ev.Body = &d.bExec
	pod := d.enr.Task(&d.task)
	return Decoded{Event: &d.ev, Kind: schema.KindProcess, Pod: pod}
}

func (d *Decoder) decodeExit(r *bpf.CollectorExitEvent) Decoded {
	d.begin(&r.Hdr)
	st := unix.WaitStatus(r.ExitCode)
	d.exit.ExitCode = int32(r.ExitCode>>8) & 0xff
	d.exit.Signal = 0
	if st.Signaled() {
		d.exit.Signal = uint32(st.Signal())
		d.exit.ExitCode = 0
	}
	d.exit.LifetimeNs = 0
	if r.Hdr.TsNs > r.StartNs {
		d.exit.LifetimeNs = r.Hdr.TsNs - r.StartNs
	}
	d.ev.Body = &d.bExit
	pod := d.enr.Task(&d.task)
	d.enr.Exit(r.Hdr.Pid)
	return Decoded{Event: &d.ev, Kind: schema.KindProcess, Pod: pod}
}

const (
	afInet  = 2
	afInet6 = 10
)

// addr returns the address bytes: 4 for IPv4 and IPv4-mapped IPv6.
func addr(dst *[16]byte, src *[16]uint8, family uint16) []byte {
	*dst = *src
	if family == afInet {
		return dst[:4]
	}
	if a := netip.AddrFrom16(*dst); a.Is4In6() {
		copy(dst[:4], dst[12:16])
		return dst[:4]
	}
	return dst[:16]
}

func (d *Decoder) decodeTCP(r *bpf.CollectorTcpEvent) Decoded {
	d.begin(&r.Hdr)
	d.fillTCP(&d.tcp, r)
	d.ev.Body = &d.bTCP
	pod := d.enr.Task(&d.task)
	out := Decoded{Event: &d.ev, Kind: schema.KindTCP, Pod: pod}
	if o, ok := bpf.OpenOf(r); ok {
		d.fillTCP(&d.openTCP, &o)
		d.open.TimeUnixNano = d.wall(o.Hdr.TsNs)
		out.Open = &d.open
	}
	return out
}

// fillTCP sets every field of t from r.
func (d *Decoder) fillTCP(t *schema.TCPEvent, r *bpf.CollectorTcpEvent) {
	t.Phase = schema.TCPPhase(r.Phase)
	t.Role = schema.Role(r.Role)
	t.LocalAddr = addr(&d.laddr, &r.Conn.Laddr, r.Conn.Family)
	t.RemoteAddr = addr(&d.raddr, &r.Conn.Raddr, r.Conn.Family)
	t.LocalPort, t.RemotePort = uint32(r.Conn.Lport), uint32(r.Conn.Rport)
	t.BytesSent, t.BytesReceived = r.BytesSent, r.BytesReceived
	t.PriorBytesSent, t.PriorBytesReceived = r.PriorSent, r.PriorReceived
	// A connect/accept record of its own is the sweep's: the side was
	// open when reported. One stood for by a close (OpenOf) was not.
	t.StillOpen = (r.Phase == bpf.PhaseConnect || r.Phase == bpf.PhaseAccept) && r.OpenSent == 0
	// A progress, or a close whose connect/accept the sweep sent.
	t.OpenReported = r.Phase == bpf.PhaseProgress || (r.Phase == bpf.PhaseClose && r.OpenSent != 0)
	t.DurationNs = 0
	if r.Phase == uint8(schema.TCPPhase_TCP_PHASE_CLOSE) && r.Hdr.TsNs > r.StartNs {
		t.DurationNs = r.Hdr.TsNs - r.StartNs
	}
	t.Errno = r.Err
	t.SockCookie = r.Cookie
	t.StartUnixNano = d.wall(r.StartNs)
	t.NetNs = uint64(r.Conn.Netns)
}

// opaque maps a socket id from the kernel (a unix socket's inode number)
// through a per-decoder key: still an identity within this collector,
// not a number to look up on the node.
func (d *Decoder) opaque(p uint64) uint64 {
	if p == 0 {
		return 0
	}
	x := (p ^ d.skKey) * 0x9e3779b97f4a7c15
	return x ^ (x >> 29)
}

func (d *Decoder) decodeUnix(r *bpf.CollectorUnixEvent) Decoded {
	d.begin(&r.Hdr)
	u := &d.unix
	u.Phase = schema.UnixPhase(r.Phase)
	u.Role = schema.Role(r.Role)
	n := min(int(r.PathLen), len(r.Path))
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&r.Path[0])), n)
	switch {
	case n == 0:
		u.Path = ""
	case raw[0] == 0:
		u.Path = "@" + string(raw[1:]) // abstract: the name is all n bytes
	default:
		u.Path = cstring(raw)
	}
	u.SockType = uint32(r.SockType)
	u.SockCookie = d.opaque(r.Sk)
	u.PeerSockCookie = d.opaque(r.PeerSk)
	u.StartUnixNano = d.wall(r.Hdr.TsNs)
	u.BytesSent, u.BytesReceived, u.DurationNs = 0, 0, 0
	u.Peer = nil
	if r.PeerPid != 0 {
		d.peer.Reset()
		d.peer.Pid, d.peer.CgroupId = r.PeerPid, r.PeerCgroupId
		d.enr.Task(&d.peer)
		u.Peer = &d.peer
	}
	d.ev.Body = &d.bUnix
	pod := d.enr.Task(&d.task)
	return Decoded{Event: &d.ev, Kind: schema.KindUnix, Pod: pod}
}
