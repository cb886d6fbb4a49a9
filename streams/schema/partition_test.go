package schema

import (
	"net/netip"
	"testing"
)

func tcp(phase TCPPhase, role Role, local, remote string) *Event {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	return &Event{Body: &Event_Tcp{Tcp: &TCPEvent{Phase: phase, Role: role,
		LocalAddr: l.Addr().AsSlice(), LocalPort: uint32(l.Port()), RemoteAddr: r.Addr().AsSlice(), RemotePort: uint32(r.Port())}}}
}

// TestPartitionBothSides: every event of one connection, from either side,
// lands in one partition; the client sees the Service VIP, the server the
// client's own address.
func TestPartitionBothSides(t *testing.T) {
	const n = 16
	spread := map[int]bool{}
	for port := 20000; port < 20200; port++ {
		client := netip.AddrPortFrom(netip.MustParseAddr("10.0.1.5"), uint16(port)).String()
		sides := []*Event{
			tcp(TCPPhase_TCP_PHASE_CONNECT, Role_ROLE_UNSPECIFIED, client, "10.96.0.10:4222"),
			tcp(TCPPhase_TCP_PHASE_CLOSE, Role_ROLE_CLIENT, client, "10.96.0.10:4222"),
			tcp(TCPPhase_TCP_PHASE_ACCEPT, Role_ROLE_UNSPECIFIED, "10.0.2.7:4222", client),
			tcp(TCPPhase_TCP_PHASE_CLOSE, Role_ROLE_SERVER, "10.0.2.7:4222", client),
			// An IPv4-mapped address is the same endpoint.
			tcp(TCPPhase_TCP_PHASE_ACCEPT, Role_ROLE_UNSPECIFIED, "[::ffff:10.0.2.7]:4222", "[::ffff:10.0.1.5]:"+itoa(port)),
			tcp(TCPPhase_TCP_PHASE_CONNECT_FAILED, Role_ROLE_CLIENT, client, "10.96.0.10:4222"),
			// A long-lived connection's progress, from each side.
			tcp(TCPPhase_TCP_PHASE_PROGRESS, Role_ROLE_CLIENT, client, "10.96.0.10:4222"),
			tcp(TCPPhase_TCP_PHASE_PROGRESS, Role_ROLE_SERVER, "10.0.2.7:4222", client),
			// The sweep's report of a side open before the collector:
			// the role says which.
			tcp(TCPPhase_TCP_PHASE_CONNECT, Role_ROLE_CLIENT, client, "10.96.0.10:4222"),
			tcp(TCPPhase_TCP_PHASE_ACCEPT, Role_ROLE_SERVER, "10.0.2.7:4222", client),
		}
		want := Partition(sides[0], n)
		for i, ev := range sides {
			if got := Partition(ev, n); got != want {
				t.Fatalf("port %d, event %d: partition %d, want %d (the connect's)", port, i, got, want)
			}
		}
		spread[want] = true
		unix := []*Event{
			{Body: &Event_Unix{Unix: &UnixEvent{SockCookie: uint64(port), PeerSockCookie: uint64(port) + 7}}},
			{Body: &Event_Unix{Unix: &UnixEvent{SockCookie: uint64(port) + 7, PeerSockCookie: uint64(port)}}},
		}
		if a, b := Partition(unix[0], n), Partition(unix[1], n); a != b {
			t.Fatalf("unix sockets %d/%d: partitions %d and %d", port, port+7, a, b)
		}
	}
	if len(spread) < n {
		t.Errorf("200 connections reached %d of %d partitions", len(spread), n)
	}
	if p := Partition(&Event{Body: &Event_Pod{Pod: &PodEvent{}}}, n); p != 0 {
		t.Errorf("pod event in partition %d, want 0 (not partitioned)", p)
	}
	if s := PartitionSubject("n.1", KindTCP, 3, n); s != "weft.events.n_1.tcp.3" {
		t.Errorf("subject %q", s)
	}
	if s := PartitionSubject("n", KindPod, 3, n); s != "weft.events.n.pod" {
		t.Errorf("pod subject %q", s)
	}
	if s := PartitionSubject("n", KindTCP, 0, 1); s != "weft.events.n.tcp" {
		t.Errorf("one partition: subject %q", s)
	}
}

func itoa(n int) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String()[len("0.0.0.0:"):]
}
