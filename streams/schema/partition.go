package schema

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// MetaPartitions is the stream metadata key that records how many
// partitions a stream's connection events are split into. It is written
// when the stream is provisioned; a topology that declares another count
// is refused (changing it is a migration, docs/scaling.md).
const MetaPartitions = "weft.partitions"

// Partitioned reports whether events of kind are split into partitions:
// connection events are (both sides of a connection must reach one
// correlator), process and pod events are not (every partition needs them).
func Partitioned(kind string) bool { return kind == KindTCP || kind == KindUnix }

// PartitionSubject is the subject of kind events from node in partition p
// of n: weft.events.<node>.<kind>.<p>. With one partition, or for a kind
// that is not partitioned, it is EventSubject's weft.events.<node>.<kind>,
// so a topology that never declares partitions keeps its subjects.
func PartitionSubject(node, kind string, p, n int) string {
	if n <= 1 || !Partitioned(kind) {
		return EventSubject(node, kind)
	}
	return EventSubject(node, kind) + "." + strconv.Itoa(p)
}

// Partition is the partition, in [0, n), of a connection event. Both
// sides of one connection, seen on two nodes, get the same partition:
//   - TCP: the client's endpoint (address, port) — the connect side's local
//     endpoint is the accept side's remote one, so no Service VIP needs
//     translating; it is also the key the correlator joins on.
//   - unix: the unordered pair of the two sockets' cookies (both sides are
//     on one node and each event names its peer).
//
// Any other event (and an event too malformed to key) is in partition 0;
// the correlator dead-letters malformed events wherever they land.
func Partition(ev *Event, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	var buf [18]byte
	switch b := ev.GetBody().(type) {
	case *Event_Tcp:
		e := b.Tcp
		addr, port := e.GetLocalAddr(), e.GetLocalPort()
		// The server side's every event (its accept, its progress while
		// open, its close) keys on its remote endpoint.
		server := e.GetPhase() == TCPPhase_TCP_PHASE_ACCEPT || e.GetRole() == Role_ROLE_SERVER
		if server {
			addr, port = e.GetRemoteAddr(), e.GetRemotePort()
		}
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return 0
		}
		a16 := a.Unmap().As16()
		copy(buf[:16], a16[:])
		binary.BigEndian.PutUint16(buf[16:], uint16(port))
		_, _ = h.Write(buf[:])
	case *Event_Unix:
		a, b2 := b.Unix.GetSockCookie(), b.Unix.GetPeerSockCookie()
		if a > b2 {
			a, b2 = b2, a
		}
		binary.BigEndian.PutUint64(buf[:8], a)
		binary.BigEndian.PutUint64(buf[8:16], b2)
		_, _ = h.Write(buf[:16])
	default:
		return 0
	}
	return int(h.Sum64() % uint64(n))
}
