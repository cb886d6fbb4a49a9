package bpf

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// TestProgress: a connection held open has its byte totals sent by the
// sweep's progress passes, each side's own view, each record carrying the
// previous one's totals as its prior; a pass with nothing new sends
// nothing; the close carries the last progress totals as its prior and
// the exact totals. Real traffic, read back from the ring buffer.
func TestProgress(t *testing.T) {
	const after = 100 * time.Millisecond
	c := openWith(t, Options{Probes: []Probe{ProbeTCP}, OpenAfter: after})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sport := uint16(ln.Addr().(*net.TCPAddr).Port)
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	cport := uint16(cl.LocalAddr().(*net.TCPAddr).Port)

	// pass runs a progress pass and returns this connection's records by
	// role. The pass has written them all when Progress returns (the walk
	// runs to its end in the call), so reading stops once the ring is
	// empty.
	pass := func() map[uint8][]CollectorTcpEvent {
		t.Helper()
		if err := c.Progress(); err != nil {
			t.Fatal(err)
		}
		got := map[uint8][]CollectorTcpEvent{}
		var rec ringbuf.Record
		for {
			c.SetDeadline(time.Now().Add(20 * time.Millisecond))
			if err := c.Read(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return got
				}
				t.Fatal(err)
			}
			e := *(*CollectorTcpEvent)(unsafe.Pointer(&rec.RawSample[0]))
			if e.Hdr.Type == TypeTCP && (e.Conn.Lport == cport && e.Conn.Rport == sport || e.Conn.Lport == sport && e.Conn.Rport == cport) {
				got[e.Role] = append(got[e.Role], e)
			}
		}
	}
	exchange := func(up, down int) {
		t.Helper()
		if _, err := cl.Write(make([]byte, up)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sv, make([]byte, up)); err != nil {
			t.Fatal(err)
		}
		if _, err := sv.Write(make([]byte, down)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cl, make([]byte, down)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * after) // old enough for the sweep to send its open
	got := pass()
	for role, phase := range map[uint8]uint8{RoleClient: PhaseConnect, RoleServer: PhaseAccept} {
		if len(got[role]) != 1 || got[role][0].Phase != phase {
			t.Fatalf("first pass, role %d: %+v, want its open alone (no bytes yet)", role, got[role])
		}
	}
	type tot struct{ sent, recv uint64 }
	var want, reported [3]tot // by role, its own view: exchanged, and the last record's totals
	for i, step := range []struct{ up, down int }{{1000, 20}, {0, 0}, {5, 70000}, {123, 456}} {
		exchange(step.up, step.down)
		want[RoleClient] = tot{want[RoleClient].sent + uint64(step.up), want[RoleClient].recv + uint64(step.down)}
		want[RoleServer] = tot{want[RoleServer].sent + uint64(step.down), want[RoleServer].recv + uint64(step.up)}
		// Acks travel on loopback at once, but a pass may still come
		// before the last one: passes until the totals are in, each
		// record's prior the previous record's totals.
		records := 0
		for try := 0; try < 50 && (reported[RoleClient] != want[RoleClient] || reported[RoleServer] != want[RoleServer]); try++ {
			for role, es := range pass() {
				for _, e := range es {
					records++
					if e.Phase != PhaseProgress {
						t.Fatalf("step %d: role %d sent phase %d, want progress only", i, role, e.Phase)
					}
					if p := (tot{e.PriorSent, e.PriorReceived}); p != reported[role] {
						t.Fatalf("step %d role %d: prior %+v, the previous record carried %+v", i, role, p, reported[role])
					}
					reported[role] = tot{e.BytesSent, e.BytesReceived}
				}
			}
		}
		if reported[RoleClient] != want[RoleClient] || reported[RoleServer] != want[RoleServer] {
			t.Fatalf("step %d: totals client %+v server %+v, want %+v %+v", i, reported[RoleClient], reported[RoleServer], want[RoleClient], want[RoleServer])
		}
		if step.up == 0 && step.down == 0 && records != 0 {
			t.Errorf("step %d, nothing exchanged: %d records, want none", i, records)
		}
		if again := pass(); len(again) != 0 {
			t.Errorf("step %d: a pass with nothing new sent %+v", i, again)
		}
	}
	cl.Close()
	sv.Close()
	var closes []CollectorTcpEvent
	var rec ringbuf.Record
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		c.SetDeadline(time.Now().Add(20 * time.Millisecond))
		if err := c.Read(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			t.Fatal(err)
		}
		e := *(*CollectorTcpEvent)(unsafe.Pointer(&rec.RawSample[0]))
		if e.Hdr.Type == TypeTCP && e.Phase == PhaseClose && (e.Conn.Lport == cport && e.Conn.Rport == sport || e.Conn.Lport == sport && e.Conn.Rport == cport) {
			closes = append(closes, e)
		}
	}
	if len(closes) != 2 {
		t.Fatalf("%d closes, want 2: %+v", len(closes), closes)
	}
	for _, e := range closes {
		w := want[e.Role]
		if e.OpenSent == 0 || e.BytesSent != w.sent || e.BytesReceived != w.recv || e.PriorSent != w.sent || e.PriorReceived != w.recv {
			t.Errorf("close of role %d: open sent %d, totals %d/%d prior %d/%d, want %d/%d both (its last progress)", e.Role, e.OpenSent,
				e.BytesSent, e.BytesReceived, e.PriorSent, e.PriorReceived, w.sent, w.recv)
		}
	}
}
