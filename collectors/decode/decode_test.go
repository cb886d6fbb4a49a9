package decode

import (
	"errors"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/streams/schema"
)

type fakeEnricher struct{ exes map[uint32]string }

func (f *fakeEnricher) Task(t *schema.Task) *schema.Pod {
	t.Exe = f.exes[t.Pid]
	t.Attribution = schema.Attribution_ATTRIBUTION_HOST
	return nil
}
func (f *fakeEnricher) Exec(pid uint32, exe string) { f.exes[pid] = exe }
func (f *fakeEnricher) Exit(pid uint32)             { delete(f.exes, pid) }

func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func setStr(dst []int8, s string) {
	for i := range len(s) {
		dst[i] = int8(s[i])
	}
}

func hdr(typ uint32, pid uint32) bpf.CollectorTaskHdr {
	h := bpf.CollectorTaskHdr{TsNs: 2_000_000_000, CgroupId: 7, Type: typ, Pid: pid, Tid: pid, Ppid: 1, Uid: 1000}
	setStr(h.Comm[:], "app")
	return h
}

func TestDecode(t *testing.T) {
	enr := &fakeEnricher{exes: map[uint32]string{}}
	d := New(enr)

	exec := &bpf.CollectorExecEvent{Hdr: hdr(bpf.TypeExec, 10)}
	setStr(exec.Filename[:], "/usr/bin/app")
	argv := "app\x00--port\x008080\x00"
	setStr(exec.Argv[:], argv)
	exec.ArgvLen = uint32(len(argv))
	exec.ArgvTruncated = 1
	got, err := d.Decode(bytesOf(exec))
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != schema.KindProcess || got.Event.GetTask().GetExe() != "/usr/bin/app" || got.Event.GetTask().GetComm() != "app" ||
		len(got.Event.GetExec().GetArgv()) != 3 || got.Event.GetExec().GetArgv()[2] != "8080" || !got.Event.GetExec().GetArgvTruncated() {
		t.Errorf("exec: %v", got.Event)
	}

	exit := &bpf.CollectorExitEvent{Hdr: hdr(bpf.TypeExit, 10), StartNs: 1_500_000_000, ExitCode: 9} // killed by SIGKILL
	got, _ = d.Decode(bytesOf(exit))
	if e := got.Event.GetExit(); e.GetSignal() != 9 || e.GetExitCode() != 0 || e.GetLifetimeNs() != 500_000_000 {
		t.Errorf("exit by signal: %v", e)
	}
	exit.ExitCode = 3 << 8
	got, _ = d.Decode(bytesOf(exit))
	if e := got.Event.GetExit(); e.GetSignal() != 0 || e.GetExitCode() != 3 {
		t.Errorf("exit 3: %v", e)
	}

	tcp := &bpf.CollectorTcpEvent{Hdr: hdr(bpf.TypeTCP, 11), Phase: 3, Role: 1, BytesSent: 10, BytesReceived: 20, StartNs: 1_000_000_000}
	tcp.Conn.Family = 10
	mapped := netip.MustParseAddr("::ffff:10.0.0.1").As16()
	v6 := netip.MustParseAddr("fd00::2").As16()
	tcp.Conn.Laddr, tcp.Conn.Raddr, tcp.Conn.Lport, tcp.Conn.Rport = mapped, v6, 40000, 443
	got, _ = d.Decode(bytesOf(tcp))
	tc := got.Event.GetTcp()
	if la, _ := netip.AddrFromSlice(tc.GetLocalAddr()); la.String() != "10.0.0.1" {
		t.Errorf("v4-mapped local address = %v, want 10.0.0.1 in 4 bytes", tc.GetLocalAddr())
	}
	if ra, _ := netip.AddrFromSlice(tc.GetRemoteAddr()); ra.String() != "fd00::2" || tc.GetRemotePort() != 443 {
		t.Errorf("remote = %v:%d", ra, tc.GetRemotePort())
	}
	if tc.GetDurationNs() != 1_000_000_000 || got.Kind != schema.KindTCP || tc.GetBytesReceived() != 20 {
		t.Errorf("tcp: %v", tc)
	}
	// The close stands for its connect too (its open was not sent): the
	// connect, at the start, same connection, no bytes.
	o := got.Open
	if o == nil {
		t.Fatal("tcp close, open not sent: no connect event")
	}
	if oc := o.GetTcp(); oc.GetPhase() != schema.TCPPhase_TCP_PHASE_CONNECT || o.GetTimeUnixNano() != oc.GetStartUnixNano() ||
		oc.GetStartUnixNano() != tc.GetStartUnixNano() || oc.GetBytesSent() != 0 || oc.GetDurationNs() != 0 ||
		oc.GetLocalPort() != 40000 || oc.GetRemotePort() != 443 || o.GetTask().GetPid() != 11 {
		t.Errorf("implied connect: %v", o)
	}
	for _, c := range []struct {
		name        string
		phase       uint8
		role        uint8
		sent        uint8
		wantPhase   schema.TCPPhase
		wantImplied bool
	}{
		{"server close", bpf.PhaseClose, bpf.RoleServer, 0, schema.TCPPhase_TCP_PHASE_ACCEPT, true},
		{"close after its open was sent", bpf.PhaseClose, bpf.RoleClient, 1, 0, false},
		{"failed connect", bpf.PhaseConnectFailed, bpf.RoleClient, 0, 0, false},
		{"connect from the sweep", bpf.PhaseConnect, bpf.RoleClient, 0, 0, false},
	} {
		r := *tcp
		r.Phase, r.Role, r.OpenSent = c.phase, c.role, c.sent
		got, _ := d.Decode(bytesOf(&r))
		if (got.Open != nil) != c.wantImplied || c.wantImplied && got.Open.GetTcp().GetPhase() != c.wantPhase {
			t.Errorf("%s: implied %v, want %v (%v)", c.name, got.Open, c.wantImplied, c.wantPhase)
		}
	}

	u := &bpf.CollectorUnixEvent{Hdr: hdr(bpf.TypeUnix, 12), Phase: 1, Role: 1, SockType: 1, Sk: 0xffff1, PeerSk: 0xffff2}
	name := "\x00broker"
	setStr(u.Path[:], name)
	u.PathLen = uint32(len(name))
	got, _ = d.Decode(bytesOf(u))
	if p := got.Event.GetUnix().GetPath(); p != "@broker" {
		t.Errorf("abstract path = %q, want @broker", p)
	}
	if got.Event.GetUnix().GetSockCookie() == 0xffff1 || got.Event.GetUnix().GetSockCookie() == 0 {
		t.Errorf("kernel address published as is")
	}

	if _, err := d.Decode(bytesOf(tcp)[:20]); !errors.Is(err, ErrShort) {
		t.Errorf("short record: err %v", err)
	}
	bad := *tcp
	bad.Hdr.Type = 99
	if _, err := d.Decode(bytesOf(&bad)); err == nil {
		t.Errorf("unknown type decoded")
	}
}

// TestDecodeNoAllocs: the TCP path allocates nothing once warm, a close
// standing for its connect too included.
func TestDecodeNoAllocs(t *testing.T) {
	d := New(&fakeEnricher{exes: map[uint32]string{}})
	tcp := &bpf.CollectorTcpEvent{Hdr: hdr(bpf.TypeTCP, 11), Phase: 1, Role: 1}
	tcp.Conn.Family = 2
	rec := bytesOf(tcp)
	closed := *tcp
	closed.Phase = bpf.PhaseClose // standing for its connect too
	crec := bytesOf(&closed)
	if n := testing.AllocsPerRun(100, func() { d.Decode(rec); d.Decode(crec) }); n != 0 {
		t.Errorf("%.0f allocations per two TCP records", n)
	}
}
