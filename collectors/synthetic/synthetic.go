// Package synthetic is the `synthetic` stage kind: it publishes
// schema-valid events at a configured rate, shaped like a small cluster's
// traffic (pods announced, processes started, TCP connections whose two
// sides and totals agree), so the pipeline runs end to end — for demos,
// tests and benchmarks — before or without real collectors.
package synthetic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

// Config is the kind's `config:`.
type Config struct {
	// Rate is events per second; 0 publishes as fast as backpressure allows.
	Rate int `yaml:"rate"`
	// Total stops after this many events; 0 runs until shutdown.
	Total int64 `yaml:"total"`
	// Nodes is how many nodes to simulate.
	Nodes int `yaml:"nodes"`
	// Pods is how many pods per node.
	Pods int `yaml:"pods"`
	// BatchEvents is the publisher's events per message.
	BatchEvents int `yaml:"batchEvents"`
}

// Validate reports every problem in c.
func (c *Config) Validate() error {
	var errs []error
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %d < 0", c.Rate))
	}
	if c.Total < 0 {
		errs = append(errs, fmt.Errorf("total %d < 0", c.Total))
	}
	if c.Nodes < 1 || c.Nodes > 1000 {
		errs = append(errs, fmt.Errorf("nodes %d: want 1..1000", c.Nodes))
	}
	if c.Pods < 2 || c.Pods > 250 {
		errs = append(errs, fmt.Errorf("pods %d: want 2..250", c.Pods))
	}
	return errors.Join(errs...)
}

// Kind is the synthetic stage kind.
func Kind() stage.Kind {
	return stage.Kind{
		Name:        "synthetic",
		Description: "publishes schema-valid synthetic events at a set rate",
		Deploy:      []stage.DeployMode{stage.DeployInProcess, stage.DeployDeployment, stage.DeployDaemonSet},
		Source:      true, Sink: true,
		NewConfig: func() any { return &Config{Rate: 1000, Nodes: 1, Pods: 8} },
		New:       New,
	}
}

// Stage publishes synthetic events.
type Stage struct {
	s      stage.Settings
	cfg    Config
	log    *slog.Logger
	pub    *publish.Publisher
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error
}

var _ stage.Stage = (*Stage)(nil)

// New builds a synthetic stage.
func New(s stage.Settings) (stage.Stage, error) {
	cfg, ok := s.Config.(*Config)
	if !ok || cfg == nil {
		cfg = Kind().NewConfig().(*Config)
	}
	if len(s.Outputs) != 1 {
		return nil, fmt.Errorf("synthetic needs exactly one output stream, has %d", len(s.Outputs))
	}
	return &Stage{s: s, cfg: *cfg, log: s.Logger}, nil
}

// Start starts publishing.
func (st *Stage) Start(ctx context.Context, host stage.Host) error {
	out := st.s.Outputs[0]
	if !publishable(out, schema.EventSubject("n", schema.KindTCP)) {
		return fmt.Errorf("output stream %s (subjects %v) does not take %s…", out.Name, out.Subjects, schema.EventsPrefix)
	}
	batch := st.cfg.BatchEvents
	pub, err := publish.New(host.JetStream().Conn(), publish.Config{
		Stage: st.s.Name, Node: st.s.Node, MaxBatchItems: batch,
	}, st.s.Counters, st.log)
	if err != nil {
		return err
	}
	st.pub = pub
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st.cancel = cancel
	st.done = make(chan struct{})
	go func() {
		defer close(st.done)
		if err := st.run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			host.Fatal(fmt.Errorf("stage %s: %w", st.s.Name, err))
		}
	}()
	return nil
}

func publishable(s stage.Stream, subject string) bool {
	for _, f := range s.Subjects {
		if matches(f, subject) {
			return true
		}
	}
	return false
}

// matches reports whether subject matches the filter.
func matches(filter, subject string) bool {
	f, s := splitDots(filter), splitDots(subject)
	for i := range f {
		if f[i] == ">" {
			return len(s) > i
		}
		if i >= len(s) || (f[i] != "*" && f[i] != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// run publishes until Total, shutdown, or an error. Pacing is per 10ms
// tick so a high rate costs no timer per event.
func (st *Stage) run(ctx context.Context) error {
	g := NewGenerator(st.s.Node, st.cfg.Nodes, st.cfg.Pods)
	pub := publish.Partitioned(st.pub, st.s.Outputs[0].Partitions)
	for _, e := range g.PodEvents() {
		if err := st.pub.Publish(ctx, e.Subject, e.Event); err != nil {
			return err
		}
	}
	const tick = 10 * time.Millisecond
	var sent int64
	var ticker *time.Ticker
	perTick := int64(1 << 30)
	if st.cfg.Rate > 0 {
		ticker = time.NewTicker(tick)
		defer ticker.Stop()
		perTick = max(int64(st.cfg.Rate)*int64(tick)/int64(time.Second), 1)
	}
	for {
		if ticker != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ticker.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		for i := int64(0); i < perTick; i++ {
			if st.cfg.Total > 0 && sent >= st.cfg.Total {
				return nil
			}
			e := g.Next()
			if err := pub.Publish(ctx, e.Subject, e.Event); err != nil {
				return err
			}
			sent++
			if ticker == nil && i%256 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
}

// Shutdown stops generating and flushes what was generated.
func (st *Stage) Shutdown(ctx context.Context) error {
	st.once.Do(func() {
		if st.cancel != nil {
			st.cancel()
			<-st.done
		}
		if st.pub != nil {
			st.err = st.pub.Close(ctx)
		}
	})
	return st.err
}

// Published is one generated event and its subject.
type Published struct {
	Subject string
	Event   *schema.Event
}

// Generator makes a deterministic stream of events for a simulated
// cluster. It is not safe for concurrent use.
type Generator struct {
	nodes []simNode
	n     uint64
	clock time.Time
	ev    schema.Event
	tcp   schema.TCPEvent
	task  schema.Task
	body  schema.Event_Tcp
	conn  pendingConn
	step  int
}

type simNode struct {
	name string
	pods []*schema.Pod
	ips  []netip.Addr
}

type pendingConn struct {
	client, server       int
	clientNode           int
	sport                uint32
	sent, recv, duration uint64
	start                time.Time
}

// NewGenerator simulates nodes nodes of pods pods each. Node names are
// node, or node-0…node-(n-1) when nodes > 1.
func NewGenerator(node string, nodes, pods int) *Generator {
	g := &Generator{clock: time.Now()}
	for n := range nodes {
		name := node
		if nodes > 1 {
			name = node + "-" + strconv.Itoa(n)
		}
		sn := simNode{name: name}
		for p := range pods {
			ip := netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), byte(p + 2)})
			role := "app"
			if p%4 == 0 {
				role = "broker"
			}
			uid := fmt.Sprintf("00000000-0000-4000-8000-%04x%08x", n, p)
			sn.pods = append(sn.pods, &schema.Pod{
				Uid: uid, Name: fmt.Sprintf("%s-%d-%d", role, n, p), Namespace: "synthetic", Node: name,
				Ips:        []string{ip.String()},
				Labels:     map[string]string{"app": role},
				Owners:     []*schema.OwnerRef{{Kind: "Deployment", Name: role, Controller: true}},
				Containers: []*schema.Container{{Id: fmt.Sprintf("%064x", uint64(n)<<32|uint64(p)), Name: role, Image: "synthetic/" + role + ":1"}},
			})
			sn.ips = append(sn.ips, ip)
		}
		g.nodes = append(g.nodes, sn)
	}
	return g
}

// PodEvents announces every simulated pod.
func (g *Generator) PodEvents() []Published {
	var out []Published
	for _, n := range g.nodes {
		for _, p := range n.pods {
			out = append(out, Published{
				Subject: schema.EventSubject(n.name, schema.KindPod),
				Event: &schema.Event{TimeUnixNano: uint64(g.clock.UnixNano()),
					Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: p}}},
			})
		}
	}
	return out
}

// Next returns the next event. The returned event is reused by the next
// call (the publisher copies it).
func (g *Generator) Next() Published {
	g.n++
	g.clock = g.clock.Add(20 * time.Microsecond)
	// Each connection is four events: client connect, server accept,
	// client close, server close, with agreeing totals.
	if g.step == 0 {
		cn := int(g.n/7) % len(g.nodes)
		pods := len(g.nodes[cn].pods)
		g.conn = pendingConn{
			clientNode: cn, client: 1 + int(g.n/4)%(pods-1), server: 0,
			sport: uint32(20000 + g.n%40000), sent: 100 + g.n%900, recv: 200 + g.n%1800,
			duration: 1_000_000 + g.n%5_000_000, start: g.clock,
		}
		if g.conn.client%4 == 0 { // brokers also call brokers, one hop over
			g.conn.server = (g.conn.client + 4) % pods
		}
	}
	c := g.conn
	n := g.nodes[c.clientNode]
	server := n.pods[c.server]
	client := n.pods[c.client]
	g.tcp = schema.TCPEvent{SockCookie: g.n, StartUnixNano: uint64(c.start.UnixNano())}
	var who *schema.Pod
	switch g.step {
	case 0, 2: // client side
		who = client
		g.tcp.Role = schema.Role_ROLE_CLIENT
		g.tcp.LocalAddr, g.tcp.LocalPort = n.ips[c.client].AsSlice(), c.sport
		g.tcp.RemoteAddr, g.tcp.RemotePort = n.ips[c.server].AsSlice(), 4222
		g.tcp.Phase = schema.TCPPhase_TCP_PHASE_CONNECT
		if g.step == 2 {
			g.tcp.Phase, g.tcp.BytesSent, g.tcp.BytesReceived, g.tcp.DurationNs = schema.TCPPhase_TCP_PHASE_CLOSE, c.sent, c.recv, c.duration
		}
	case 1, 3: // server side
		who = server
		g.tcp.Role = schema.Role_ROLE_SERVER
		g.tcp.LocalAddr, g.tcp.LocalPort = n.ips[c.server].AsSlice(), 4222
		g.tcp.RemoteAddr, g.tcp.RemotePort = n.ips[c.client].AsSlice(), c.sport
		g.tcp.Phase = schema.TCPPhase_TCP_PHASE_ACCEPT
		if g.step == 3 {
			g.tcp.Phase, g.tcp.BytesSent, g.tcp.BytesReceived, g.tcp.DurationNs = schema.TCPPhase_TCP_PHASE_CLOSE, c.recv, c.sent, c.duration
		}
	}
	g.step = (g.step + 1) % 4
	g.task = schema.Task{
		Pid: uint32(1000 + c.client), Tid: uint32(1000 + c.client), Comm: who.Containers[0].Name,
		Exe: "/usr/bin/" + who.Containers[0].Name, CgroupId: uint64(c.client + 1),
		ContainerId: who.Containers[0].Id, PodUid: who.Uid, Attribution: schema.Attribution_ATTRIBUTION_POD,
	}
	g.body.Tcp = &g.tcp
	g.ev = schema.Event{TimeUnixNano: uint64(g.clock.UnixNano()), Task: &g.task, Body: &g.body}
	return Published{Subject: schema.EventSubject(n.name, schema.KindTCP), Event: &g.ev}
}
