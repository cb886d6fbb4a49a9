package collector

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/weftobs/weft/collectors/bpf"
	"github.com/weftobs/weft/collectors/decode"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/testenv/natstest"
	"github.com/weftobs/weft/testenv/node"
	"github.com/weftobs/weft/testenv/scenario"
	"github.com/weftobs/weft/testenv/stagehost"
	"github.com/weftobs/weft/testenv/workload"
	"slices"
)

func TestMain(m *testing.M) {
	workload.Main()
	if os.Getenv(unprivEnv) != "" {
		unprivilegedChild()
	}
	code := m.Run()
	if code == 0 {
		// Shutdown must stop every goroutine the stage started.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const unprivEnv = "WEFT_TEST_UNPRIVILEGED"

// unprivilegedChild starts the stage without privileges, both ways, and
// prints what happened.
func unprivilegedChild() {
	for _, required := range []bool{false, true} {
		cfg := NewConfig()
		cfg.Required = required
		cfg.Metadata.Provider = ProviderNone
		s := New(stage.Settings{Name: "collector"}, cfg)
		err := s.Start(context.Background(), stagehost.New(nil))
		fmt.Printf("required=%v idle=%v err=%v\n", required, s.Stats().Idle, err)
		s.Shutdown(context.Background())
	}
	os.Exit(0)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the collector needs root (CAP_BPF, CAP_PERFMON, BTF) to load eBPF; CI runs as root")
	}
	if err := bpf.CheckPrivileges(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

// events collects every event published to EVENTS.
type events struct {
	mu  sync.Mutex
	all []*schema.Event
	sub map[*schema.Event]string
}

func collect(t *testing.T, js jetstream.JetStream) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cons, err := js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{sub: map[*schema.Event]string{}}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		b, err := schema.DecodeEventBatch(m.Data())
		if err != nil {
			t.Errorf("decode batch on %s: %v", m.Subject(), err)
			return
		}
		ev.mu.Lock()
		for _, e := range b.Events {
			ev.all = append(ev.all, e)
			ev.sub[e] = m.Subject()
		}
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return ev
}

func (ev *events) find(f func(*schema.Event) bool) *schema.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.all {
		if f(e) {
			return e
		}
	}
	return nil
}

// waitFor returns the first event matching f, failing the test after 10s.
func (ev *events) waitFor(t *testing.T, what string, f func(*schema.Event) bool) *schema.Event {
	t.Helper()
	var got *schema.Event
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got = ev.find(f); got == nil {
			return fmt.Errorf("no %s event", what)
		}
		return nil
	})
	return got
}

func startStage(t *testing.T, js jetstream.JetStream, nodeName string, cfg *Config) *Stage {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := New(stage.Settings{Name: "collector", Kind: "collector", Node: nodeName, Config: cfg}, cfg)
	if err := s.Start(context.Background(), stagehost.New(js)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// start runs a workload role in c (nil: on the host) and returns its
// process and output lines.
func start(t *testing.T, c *node.Container, role string, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	var wrap func(string, ...string) (*exec.Cmd, error)
	if c != nil {
		wrap = c.Command
	}
	cmd, err := workload.Command(wrap, role, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := workload.Lines(cmd)
	node.Release(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, lines
}

func line(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok || !strings.HasPrefix(l, prefix) {
			t.Fatalf("want a %q line, got %q (open %v)", prefix, l, ok)
		}
		return strings.TrimPrefix(l, prefix)
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q line after 10s", prefix)
	}
	return ""
}

func wait(t *testing.T, cmd *exec.Cmd, code int) {
	t.Helper()
	err := cmd.Wait()
	if got := cmd.ProcessState.ExitCode(); got != code {
		t.Fatalf("%s exited %d (%v), want %d", cmd.Args, got, err, code)
	}
}

func tcpOf(e *schema.Event) *schema.TCPEvent { return e.GetTcp() }

func hasTCP(pid int, phase schema.TCPPhase) func(*schema.Event) bool {
	return func(e *schema.Event) bool {
		return e.GetTcp() != nil && int(e.GetTask().GetPid()) == pid && e.GetTcp().GetPhase() == phase
	}
}

func checkTask(t *testing.T, what string, task *schema.Task, pid int, c *node.Container) {
	t.Helper()
	if int(task.GetPid()) != pid {
		t.Errorf("%s: pid %d, want %d", what, task.GetPid(), pid)
	}
	if c == nil {
		if task.GetPodUid() != "" || task.GetContainerId() != "" || task.GetAttribution() != schema.Attribution_ATTRIBUTION_HOST {
			t.Errorf("%s: host process attributed to pod %q container %q (%v)", what, task.GetPodUid(), task.GetContainerId(), task.GetAttribution())
		}
		return
	}
	if task.GetPodUid() != c.Pod.UID || task.GetContainerId() != c.ID {
		t.Errorf("%s: pod %q container %q, want pod %s container %s", what, task.GetPodUid(), task.GetContainerId(), c.Pod.UID, c.ID)
	}
}

func addrPort(b []byte, port uint32) string {
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// TestCollectorSimulatedNode runs the three call patterns on a simulated
// node and checks every event against what the workload did: an app pod
// calling a broker pod over TCP, an app container calling its broker
// sidecar over a unix socket in a shared volume, and an app calling a
// node-local broker on the host network; plus a refused connect, a process
// exit code, a pod missing from metadata and a host process.
func TestCollectorSimulatedNode(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	ev := collect(t, ns.JS)

	n := node.New(t, "node-a")
	app := n.AddPod("app", "shop", false, "app", "broker-sidecar")
	broker := n.AddPod("broker", "shop", false, "broker")
	daemon := n.AddPod("node-broker", "infra", true, "broker")
	ghost := n.AddPod("ghost", "shop", false, "ghost")
	cfg := NewConfig()
	cfg.Metadata = MetadataConfig{Provider: ProviderFile, File: n.WriteMetadata(t.TempDir(), ghost)}
	s := startStage(t, ns.JS, n.Name, cfg)

	// 1. app → broker pod over TCP.
	srv, srvOut := start(t, broker.Container("broker"), "server", "tcp", "0.0.0.0:7000", "2", "1000", "2000")
	line(t, srvOut, "listening ")
	cli, cliOut := start(t, app.Container("app"), "client", "tcp", broker.IP+":7000", "1000", "2000", "3")
	local := line(t, cliOut, "local ")
	wait(t, cli, 3)

	conn := ev.waitFor(t, "client connect", hasTCP(cli.Process.Pid, schema.TCPPhase_TCP_PHASE_CONNECT))
	checkTask(t, "client connect", conn.GetTask(), cli.Process.Pid, app.Container("app"))
	if got := addrPort(tcpOf(conn).GetLocalAddr(), tcpOf(conn).GetLocalPort()); got != local {
		t.Errorf("client connect local %s, want %s", got, local)
	}
	if got := addrPort(tcpOf(conn).GetRemoteAddr(), tcpOf(conn).GetRemotePort()); got != broker.IP+":7000" {
		t.Errorf("client connect remote %s, want %s:7000", got, broker.IP)
	}
	if conn.GetTask().GetAttribution() != schema.Attribution_ATTRIBUTION_POD {
		t.Errorf("client attribution %v", conn.GetTask().GetAttribution())
	}
	cl := ev.waitFor(t, "client close", hasTCP(cli.Process.Pid, schema.TCPPhase_TCP_PHASE_CLOSE))
	if tc := tcpOf(cl); tc.GetBytesSent() != 1000 || tc.GetBytesReceived() != 2000 || tc.GetRole() != schema.Role_ROLE_CLIENT || tc.GetDurationNs() == 0 {
		t.Errorf("client close: %v", tc)
	}
	acc := ev.waitFor(t, "server accept", hasTCP(srv.Process.Pid, schema.TCPPhase_TCP_PHASE_ACCEPT))
	checkTask(t, "server accept", acc.GetTask(), srv.Process.Pid, broker.Container("broker"))
	if got := addrPort(tcpOf(acc).GetRemoteAddr(), tcpOf(acc).GetRemotePort()); got != local {
		t.Errorf("server accept remote %s, want %s", got, local)
	}
	sc := ev.waitFor(t, "server close", hasTCP(srv.Process.Pid, schema.TCPPhase_TCP_PHASE_CLOSE))
	if tc := tcpOf(sc); tc.GetBytesSent() != 2000 || tc.GetBytesReceived() != 1000 || tc.GetRole() != schema.Role_ROLE_SERVER {
		t.Errorf("server close: %v", tc)
	}

	// Exec and exit of the client, with its exit code.
	ex := ev.waitFor(t, "client exec", func(e *schema.Event) bool {
		return e.GetExec() != nil && int(e.GetTask().GetPid()) == cli.Process.Pid && strings.HasSuffix(e.GetTask().GetExe(), filepath.Base(os.Args[0]))
	})
	if argv := ex.GetExec().GetArgv(); len(argv) < 2 || argv[1] != "-test.run=^$" {
		t.Errorf("client exec argv %q", argv)
	}
	checkTask(t, "client exec", ex.GetTask(), cli.Process.Pid, app.Container("app"))
	exit := ev.waitFor(t, "client exit", func(e *schema.Event) bool {
		return e.GetExit() != nil && int(e.GetTask().GetPid()) == cli.Process.Pid
	})
	if exit.GetExit().GetExitCode() != 3 || exit.GetExit().GetLifetimeNs() == 0 {
		t.Errorf("client exit: %v", exit.GetExit())
	}

	// 2. A refused connect from the ghost pod (not in metadata).
	bad, badOut := start(t, ghost.Container("ghost"), "client", "tcp", broker.IP+":7999", "1", "1", "4")
	line(t, badOut, "error ")
	wait(t, bad, 4)
	fail := ev.waitFor(t, "failed connect", hasTCP(bad.Process.Pid, schema.TCPPhase_TCP_PHASE_CONNECT_FAILED))
	if tcpOf(fail).GetErrno() != 111 || tcpOf(fail).GetRemotePort() != 7999 {
		t.Errorf("failed connect: errno %d port %d, want ECONNREFUSED (111) to 7999", tcpOf(fail).GetErrno(), tcpOf(fail).GetRemotePort())
	}
	if a := fail.GetTask().GetAttribution(); a != schema.Attribution_ATTRIBUTION_POD_NOT_IN_METADATA || fail.GetTask().GetPodUid() != ghost.UID {
		t.Errorf("ghost pod: attribution %v pod %q, want POD_NOT_IN_METADATA %s", a, fail.GetTask().GetPodUid(), ghost.UID)
	}

	// An unreachable address (no pod has it: ARP fails): EHOSTUNREACH.
	nowhere := n.IP[:strings.LastIndexByte(n.IP, '.')] + ".250"
	un, unOut := start(t, app.Container("app"), "client", "tcp", nowhere+":80", "1", "1", "5")
	line(t, unOut, "error ")
	wait(t, un, 5)
	unr := ev.waitFor(t, "unreachable connect", hasTCP(un.Process.Pid, schema.TCPPhase_TCP_PHASE_CONNECT_FAILED))
	if e := tcpOf(unr).GetErrno(); e != 113 && e != 110 {
		t.Errorf("unreachable connect: errno %d, want EHOSTUNREACH (113) or ETIMEDOUT (110)", e)
	}
	if got := addrPort(tcpOf(unr).GetRemoteAddr(), tcpOf(unr).GetRemotePort()); got != nowhere+":80" {
		t.Errorf("unreachable connect remote %s", got)
	}

	// 3. app container → broker sidecar over a unix socket in a shared
	// volume, and over an abstract socket.
	for _, path := range []string{filepath.Join(t.TempDir(), "broker.sock"), "@weft-test-" + n.Name + "-" + fmt.Sprint(os.Getpid())} {
		addr := path // Go's net makes "@name" abstract
		usrv, usrvOut := start(t, app.Container("broker-sidecar"), "server", "unix", addr, "1", "10", "20")
		line(t, usrvOut, "listening ")
		ucli, _ := start(t, app.Container("app"), "client", "unix", addr, "10", "20", "0")
		wait(t, ucli, 0)
		uc := ev.waitFor(t, "unix connect "+path, func(e *schema.Event) bool {
			return e.GetUnix() != nil && int(e.GetTask().GetPid()) == ucli.Process.Pid && e.GetUnix().GetPhase() == schema.UnixPhase_UNIX_PHASE_CONNECT
		})
		checkTask(t, "unix connect", uc.GetTask(), ucli.Process.Pid, app.Container("app"))
		if u := uc.GetUnix(); u.GetPath() != path || u.GetRole() != schema.Role_ROLE_CLIENT || u.GetSockType() != 1 {
			t.Errorf("unix connect: path %q role %v type %d, want %q client stream", u.GetPath(), u.GetRole(), u.GetSockType(), path)
		}
		// One event names both ends: the server is whoever listen()ed.
		checkTask(t, "unix connect peer", uc.GetUnix().GetPeer(), usrv.Process.Pid, app.Container("broker-sidecar"))
		if uc.GetUnix().GetSockCookie() == 0 || uc.GetUnix().GetPeerSockCookie() == 0 || uc.GetUnix().GetSockCookie() == uc.GetUnix().GetPeerSockCookie() {
			t.Errorf("unix connect socket ids %x/%x: want two distinct ids", uc.GetUnix().GetSockCookie(), uc.GetUnix().GetPeerSockCookie())
		}
		wait(t, usrv, 0)
	}

	// 4. app → node-local broker on the host network (DaemonSet pattern).
	dsrv, dOut := start(t, daemon.Container("broker"), "server", "tcp", n.IP+":7001", "1", "300", "400")
	line(t, dOut, "listening ")
	dcli, _ := start(t, app.Container("app"), "client", "tcp", n.IP+":7001", "300", "400", "0")
	wait(t, dcli, 0)
	dacc := ev.waitFor(t, "daemon close", hasTCP(dsrv.Process.Pid, schema.TCPPhase_TCP_PHASE_CLOSE))
	checkTask(t, "daemon broker", dacc.GetTask(), dsrv.Process.Pid, daemon.Container("broker"))
	if tc := tcpOf(dacc); tc.GetBytesSent() != 400 || tc.GetBytesReceived() != 300 {
		t.Errorf("daemon close: %v", tc)
	}

	// 5. A host process: this test, over loopback, its connection held
	// open: its connect is published while it is open (the sweep).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	hc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hport := uint32(hc.LocalAddr().(*net.TCPAddr).Port)
	host := ev.waitFor(t, "host connect", func(e *schema.Event) bool {
		return e.GetTcp().GetPhase() == schema.TCPPhase_TCP_PHASE_CONNECT && e.GetTcp().GetLocalPort() == hport && int(e.GetTask().GetPid()) == os.Getpid()
	})
	checkTask(t, "host process", host.GetTask(), os.Getpid(), nil)
	hc.Close()
	ln.Close()
	hcl := ev.waitFor(t, "host close", func(e *schema.Event) bool {
		return e.GetTcp().GetPhase() == schema.TCPPhase_TCP_PHASE_CLOSE && e.GetTcp().GetLocalPort() == hport && int(e.GetTask().GetPid()) == os.Getpid()
	})
	if hcl.GetTcp().GetSockCookie() != host.GetTcp().GetSockCookie() {
		t.Errorf("host close cookie %d, connect's %d", hcl.GetTcp().GetSockCookie(), host.GetTcp().GetSockCookie())
	}

	// Pods are announced once seen; the ghost is not (nothing known).
	ev.waitFor(t, "app pod", func(e *schema.Event) bool {
		return e.GetPod().GetPod().GetUid() == app.UID && e.GetPod().GetOp() == schema.PodEvent_OP_UPSERT && e.GetPod().GetPod().GetName() == "app"
	})
	if e := ev.find(func(e *schema.Event) bool { return e.GetPod().GetPod().GetUid() == ghost.UID }); e != nil {
		t.Errorf("ghost pod announced: %v", e)
	}
	// Subjects: weft.events.<node>.<kind>.
	ev.mu.Lock()
	subj := ev.sub[conn]
	ev.mu.Unlock()
	if subj != "weft.events.node-a.tcp" {
		t.Errorf("tcp event on %q", subj)
	}

	st := s.Stats()
	if st.Lost != 0 {
		t.Errorf("lost %d events under moderate load", st.Lost)
	}
	if st.PodNotInMetadata == 0 {
		t.Errorf("pod-not-in-metadata gap not counted")
	}
}

// TestPodNamedAfterItsCall: a pod announced before the kubelet reported its
// container (the metadata without it: its container has no name, no
// image), whose one process calls once and exits, is announced again as
// soon as the metadata names the container, though the pod makes no event
// after that: what a client Job's pod on a real cluster does.
func TestPodNamedAfterItsCall(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	ev := collect(t, ns.JS)

	n := node.New(t, "node-a")
	broker := n.AddPod("broker", "shop", false, "broker")
	report := n.AddPod("report", "batch", false, "report")
	dir := t.TempDir()
	early := n.Metadata()
	for i := range early.Pods {
		if early.Pods[i].UID == report.UID {
			early.Pods[i].Containers = nil
		}
	}
	b, err := yaml.Marshal(early)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metadata.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig()
	cfg.Metadata = MetadataConfig{Provider: ProviderFile, File: path}
	startStage(t, ns.JS, n.Name, cfg)

	srv, srvOut := start(t, broker.Container("broker"), "server", "tcp", "0.0.0.0:7000", "1", "10", "20")
	line(t, srvOut, "listening ")
	cli, _ := start(t, report.Container("report"), "client", "tcp", broker.IP+":7000", "10", "20", "0")
	wait(t, cli, 0)
	wait(t, srv, 0)
	reportPod := func(e *schema.Event) bool { return e.GetPod().GetPod().GetUid() == report.UID }
	first := ev.waitFor(t, "report pod announced", reportPod)
	if c := first.GetPod().GetPod().GetContainers(); len(c) != 0 {
		t.Fatalf("first announcement with containers %v, want none (the metadata had none)", c)
	}

	if n.WriteMetadata(dir) != path {
		t.Fatal("metadata written elsewhere")
	}
	named := ev.waitFor(t, "report pod announced again, its container named", func(e *schema.Event) bool {
		c := e.GetPod().GetPod().GetContainers()
		return reportPod(e) && len(c) == 1 && c[0].GetName() == "report" && c[0].GetId() == report.Container("report").ID
	})
	if named.GetPod().GetOp() != schema.PodEvent_OP_UPSERT {
		t.Errorf("second announcement: %v, want an upsert", named.GetPod().GetOp())
	}
}

// TestShutdownDetaches: after Shutdown no link or program of the collector
// is left in the kernel.
func TestShutdownDetaches(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	cfg := NewConfig()
	cfg.Metadata.Provider = ProviderNone
	s := startStage(t, ns.JS, "node-a", cfg)
	coll := s.Collector()
	var linkIDs []link.ID
	for _, l := range coll.Links() {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		linkIDs = append(linkIDs, info.ID)
	}
	if len(linkIDs) == 0 {
		t.Fatal("no links attached")
	}
	progs := coll.ProgramIDs()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	for _, id := range linkIDs {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			t.Errorf("link %d still attached after Shutdown", id)
		}
	}
	for _, id := range progs {
		natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			return programGone(id)
		})
	}
}

// TestUnprivileged: as an ordinary user the stage stays idle and says
// why, or, with required: true, fails naming what is missing, no stack
// trace.
func TestUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to start a child as another user")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to root: the user could not reach it.
	dir, err := os.MkdirTemp("", "weft-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "collector.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), unprivEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	got := string(out)
	if !strings.Contains(got, "required=false idle=true err=<nil>") {
		t.Errorf("not required: want idle without error, got:\n%s", got)
	}
	if !strings.Contains(got, "required=true idle=false err=collector collector: missing privileges for eBPF: CAP_BPF, CAP_PERFMON") {
		t.Errorf("required: want an error naming CAP_BPF and CAP_PERFMON, got:\n%s", got)
	}
	t.Logf("%s", got)
}

func TestShutdownWithoutStart(t *testing.T) {
	s := New(stage.Settings{Name: "c"}, NewConfig())
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestScenario checks testenv/scenario's ground truth against the
// collector: what the correlator's tests rely on.
func TestScenario(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	ev := collect(t, ns.JS)
	tr := scenario.Pods(t, node.New(t, "node-b"))
	cfg := NewConfig()
	cfg.Metadata = MetadataConfig{Provider: ProviderFile, File: tr.MetadataPath}
	s := startStage(t, ns.JS, tr.Node.Name, cfg)
	tr.Run(t)
	for _, c := range tr.Calls {
		switch c.Transport {
		case "tcp":
			cl := ev.waitFor(t, "client close", hasTCP(c.ClientPid, schema.TCPPhase_TCP_PHASE_CLOSE))
			checkTask(t, "client", cl.GetTask(), c.ClientPid, c.Client)
			knownPod(t, "client", cl.GetTask())
			if got := addrPort(tcpOf(cl).GetLocalAddr(), tcpOf(cl).GetLocalPort()); got != c.ClientAddr {
				t.Errorf("client local %s, want %s", got, c.ClientAddr)
			}
			if got := addrPort(tcpOf(cl).GetRemoteAddr(), tcpOf(cl).GetRemotePort()); got != c.ServerAddr {
				t.Errorf("client remote %s, want %s", got, c.ServerAddr)
			}
			if int(tcpOf(cl).GetBytesSent()) != c.BytesSent || int(tcpOf(cl).GetBytesReceived()) != c.BytesReceived {
				t.Errorf("client %s bytes %d/%d, want %d/%d", c.ServerAddr, tcpOf(cl).GetBytesSent(), tcpOf(cl).GetBytesReceived(), c.BytesSent, c.BytesReceived)
			}
			sv := ev.waitFor(t, "server close", hasTCP(c.ServerPid, schema.TCPPhase_TCP_PHASE_CLOSE))
			checkTask(t, "server", sv.GetTask(), c.ServerPid, c.Server)
			knownPod(t, "server", sv.GetTask())
			if int(tcpOf(sv).GetBytesSent()) != c.BytesReceived || int(tcpOf(sv).GetBytesReceived()) != c.BytesSent {
				t.Errorf("server %s bytes %d/%d, want %d/%d", c.ServerAddr, tcpOf(sv).GetBytesSent(), tcpOf(sv).GetBytesReceived(), c.BytesReceived, c.BytesSent)
			}
		case "unix":
			uc := ev.waitFor(t, "unix connect", func(e *schema.Event) bool {
				return e.GetUnix().GetPhase() == schema.UnixPhase_UNIX_PHASE_CONNECT && int(e.GetTask().GetPid()) == c.ClientPid
			})
			checkTask(t, "unix client", uc.GetTask(), c.ClientPid, c.Client)
			knownPod(t, "unix client", uc.GetTask())
			checkTask(t, "unix server", uc.GetUnix().GetPeer(), c.ServerPid, c.Server)
			if uc.GetUnix().GetPath() != c.ServerAddr {
				t.Errorf("unix path %q, want %q", uc.GetUnix().GetPath(), c.ServerAddr)
			}
		}
	}
	// Every scenario pod known: each event above was attributed to its
	// pod (knownPod). The node-wide PodNotInMetadata is no measure: it
	// counts other pods' processes too (a test cluster's, on this
	// machine).
	if st := s.Stats(); st.Lost != 0 {
		t.Errorf("stats %+v: want nothing lost", st)
	}
}

// knownPod fails t unless task was attributed to a pod the metadata knows.
func knownPod(t *testing.T, what string, task *schema.Task) {
	t.Helper()
	if a := task.GetAttribution(); a != schema.Attribution_ATTRIBUTION_POD {
		t.Errorf("%s: attribution %v, want a pod the metadata knows", what, a)
	}
}

// TestFilters: namespace and process filters leave events out, counted.
func TestFilters(t *testing.T) {
	podIn := &schema.Pod{Namespace: "shop"}
	podOut := &schema.Pod{Namespace: "kube-system"}
	ev := func(comm, podUID string) *schema.Event {
		return &schema.Event{Task: &schema.Task{Comm: comm, Exe: "/usr/bin/" + comm, PodUid: podUID}}
	}
	tests := []struct {
		name string
		cfg  func(*Config)
		ev   *schema.Event
		pod  *schema.Pod
		want bool
	}{
		{"defaults keep everything", func(*Config) {}, ev("sshd", ""), nil, true},
		{"excluded namespace", func(c *Config) { c.ExcludeNamespaces = []string{"kube-system"} }, ev("app", "u"), podOut, false},
		{"included namespace", func(c *Config) { c.Namespaces = []string{"shop"} }, ev("app", "u"), podIn, true},
		{"namespace not included", func(c *Config) { c.Namespaces = []string{"shop"} }, ev("app", "u"), podOut, false},
		{"no host processes", func(c *Config) { c.HostProcesses = false }, ev("sshd", ""), nil, false},
		{"process glob on exe", func(c *Config) { c.Processes = []string{"/usr/bin/ap*"} }, ev("app", ""), nil, true},
		{"process glob misses", func(c *Config) { c.Processes = []string{"nginx"} }, ev("app", ""), nil, false},
		{"excluded process", func(c *Config) { c.ExcludeProcesses = []string{"sshd"} }, ev("sshd", ""), nil, false},
		{"sidecar keeps its pod", func(c *Config) { c.Pod = "u" }, ev("app", "u"), podIn, true},
		{"sidecar leaves another pod", func(c *Config) { c.Pod = "u" }, ev("app", "v"), podIn, false},
		{"sidecar leaves host processes", func(c *Config) { c.Pod = "u" }, ev("sshd", ""), nil, false},
		{"sidecar and namespace filter", func(c *Config) { c.Pod = "u"; c.ExcludeNamespaces = []string{"shop"} }, ev("app", "u"), podIn, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewConfig()
			tt.cfg(cfg)
			f := newFilter(cfg)
			if got := f.allow(decode.Decoded{Event: tt.ev, Pod: tt.pod}); got != tt.want {
				t.Errorf("allow = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	c := NewConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.Probes = []string{"dns"}
	c.RingBufferBytes = 1000
	c.MaxSockets = 1
	c.OpenAfter = time.Millisecond
	c.Processes = []string{"[bad"}
	c.Metadata = MetadataConfig{Provider: ProviderFile}
	err := c.Validate()
	for _, want := range []string{"dns", "ringBufferBytes", "maxSockets", "openAfter", "[bad", "metadata.file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
}

// TestRefusedProbe: a program the kernel refuses fails a required
// collector with one short line; otherwise its probe is off, the others
// run, and the stage says it is degraded (Stats, Degraded).
func TestRefusedProbe(t *testing.T) {
	requireRoot(t)
	ns := natstest.Start(t)
	ns.CreateStream(t, "EVENTS", "weft.events.>")
	refuseExit := func(s *ebpf.CollectionSpec) {
		s.Programs["handle_exit"].Instructions = asm.Instructions{asm.Return()}
	}
	for _, required := range []bool{true, false} {
		t.Run(fmt.Sprintf("required=%v", required), func(t *testing.T) {
			cfg := NewConfig()
			cfg.Metadata.Provider = ProviderNone
			cfg.Required = required
			cfg.editSpec = refuseExit
			s := New(stage.Settings{Name: "collector", Kind: "collector", Node: "node-a", Config: cfg}, cfg)
			err := s.Start(context.Background(), stagehost.New(ns.JS))
			t.Cleanup(func() { s.Shutdown(context.Background()) })
			if required {
				if err == nil || !strings.Contains(err.Error(), "probe process: program handle_exit refused by this kernel: R0 !read_ok") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("required: Start error %v, want one line naming the probe, the program and the verifier's line", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if !slices.Equal(st.Probes, []bpf.Probe{bpf.ProbeTCP, bpf.ProbeUnix}) {
				t.Errorf("probes %v, want [tcp unix] (and process off)", st.Probes)
			}
			if len(st.Failed) != 1 || len(s.Degraded()) < 1 || !strings.Contains(strings.Join(s.Degraded(), "\n"), "probe process: program handle_exit refused") {
				t.Errorf("failed %v, degraded %v: want the refused program", st.Failed, s.Degraded())
			}
			for _, f := range s.Collector().Failed() {
				os.Remove(f.LogFile)
			}
		})
	}
}
