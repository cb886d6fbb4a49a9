package synthetic

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/streams/schema"
)

// run steps a generator every 10ms of a simulated wall clock for d, and
// returns every event with the step time it was returned at.
type stepped struct {
	at time.Time
	Published
}

func run(g *Generator, t0 time.Time, d time.Duration) []stepped {
	var out []stepped
	for now := t0; !now.After(t0.Add(d)); now = now.Add(10 * time.Millisecond) {
		for _, p := range g.Step(now) {
			out = append(out, stepped{now, p})
		}
	}
	return out
}

// TestClusterIsFaithful checks the simulated cluster's events against
// what a real cluster gives the collectors, and the generator's ground
// truth against the events themselves.
func TestClusterIsFaithful(t *testing.T) {
	for _, tc := range []struct {
		nodes, pods int
		stop        bool
	}{{1, 2, false}, {1, 5, false}, {3, 8, false}, {1, 5, true}, {3, 8, true}} {
		t.Run(fmt.Sprintf("%dx%d/stop=%v", tc.nodes, tc.pods, tc.stop), func(t *testing.T) {
			opt := Options{Nodes: tc.nodes, Pods: tc.pods, CallsPerSecond: 200, RestartEvery: time.Second, ProbeEvery: 250 * time.Millisecond}
			g := NewGenerator("node", opt)
			t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
			evs := run(g, t0, 3500*time.Millisecond)
			if tc.stop {
				end := t0.Add(3505 * time.Millisecond)
				for _, p := range g.Stop(end) {
					evs = append(evs, stepped{end, p})
				}
			}
			truth := g.Truth()

			// Real time: every event stands for a time no later than the
			// step that returned it, and at most two steps earlier.
			for _, e := range evs {
				ts := time.Unix(0, int64(e.Event.GetTimeUnixNano()))
				if ts.After(e.at) || ts.Before(e.at.Add(-20*time.Millisecond)) {
					t.Fatalf("event at %v returned at step %v", ts, e.at)
				}
			}
			if last := time.Unix(0, int64(evs[len(evs)-1].Event.GetTimeUnixNano())); t0.Add(3500*time.Millisecond).Sub(last) > 100*time.Millisecond {
				t.Errorf("last event at %v: the clock fell behind real time", last)
			}

			// Pods: a ReplicaSet owns each app pod, named after it, as
			// Kubernetes makes them; the broker is a StatefulSet's.
			names := map[string]bool{}
			for _, p := range truth.Pods {
				if names[p.Name] {
					t.Errorf("pod name %s twice", p.Name)
				}
				names[p.Name] = true
				switch p.Role {
				case RoleBroker:
					if p.Owner != "StatefulSet/nats" || p.Deployment != "" {
						t.Errorf("broker %s owned by %s", p.Name, p.Owner)
					}
				default:
					rs := strings.TrimPrefix(p.Owner, "ReplicaSet/")
					if rs == p.Owner || !strings.HasPrefix(rs, p.Deployment+"-") || !strings.HasPrefix(p.Name, rs+"-") || len(p.Name) != len(rs)+6 {
						t.Errorf("app pod %s owned by %s of deployment %s", p.Name, p.Owner, p.Deployment)
					}
				}
			}
			if len(truth.Pods) != tc.nodes*tc.pods+truth.Replaced || truth.Replaced != 1 {
				t.Errorf("%d pods, %d replaced; want 1 replaced, and %d pods running and it", len(truth.Pods), truth.Replaced, tc.nodes*tc.pods)
			}
			// Pods deleted: the node announced each delete, at the time
			// the truth gives as its end, and only those.
			deletes := map[string]int64{}
			for _, e := range evs {
				if pe := e.Event.GetPod(); pe.GetOp() == schema.PodEvent_OP_DELETE {
					deletes[pe.GetPod().GetUid()] = int64(e.Event.GetTimeUnixNano())
				}
			}
			ended := map[string]int64{}
			for _, p := range truth.Pods {
				if p.EndedAt != 0 {
					ended[p.UID] = p.EndedAt
				}
			}
			if len(ended) != truth.Replaced || !maps.Equal(ended, deletes) {
				t.Errorf("ended pods %v, deletes announced %v", ended, deletes)
			}

			// Processes: each exec'd once with its own pid per node, and
			// each exit is of a running process.
			type pk struct {
				node string
				pid  uint32
			}
			running := map[pk]string{} // → container
			var execs, exits int
			containers := map[string]bool{}
			for _, e := range evs {
				node := strings.Split(e.Subject, ".")[2]
				tk := e.Event.GetTask()
				switch b := e.Event.GetBody().(type) {
				case *schema.Event_Exec:
					execs++
					k := pk{node, tk.GetPid()}
					if _, dup := running[k]; dup {
						t.Fatalf("pid %d exec'd twice on %s", k.pid, node)
					}
					running[k] = tk.GetContainerId()
					containers[tk.GetContainerId()] = true
					if len(b.Exec.GetArgv()) == 0 || tk.GetExe() == "" || tk.GetPodUid() == "" {
						t.Errorf("exec %+v", tk)
					}
				case *schema.Event_Exit:
					exits++
					k := pk{node, tk.GetPid()}
					if _, ok := running[k]; !ok {
						t.Fatalf("exit of pid %d on %s, never exec'd or exited already", k.pid, node)
					}
					delete(running, k)
				case *schema.Event_Tcp:
					if _, ok := running[pk{node, tk.GetPid()}]; !ok {
						t.Fatalf("tcp event by pid %d on %s, not running", tk.GetPid(), node)
					}
				}
			}
			if execs != truth.Execs || exits != truth.Exits {
				t.Errorf("%d execs, %d exits; truth says %d, %d", execs, exits, truth.Execs, truth.Exits)
			}
			if truth.Restarts != 3 || exits <= truth.Restarts || execs <= truth.Containers {
				t.Errorf("%d execs, %d exits, %d restarts: want 3 restarts, and probes exec'd and exited", execs, exits, truth.Restarts)
			}
			if len(containers) != truth.Containers || truth.Containers != tc.nodes*tc.pods+truth.Restarts {
				t.Errorf("%d containers seen, truth %d, want one per pod plus one per restart", len(containers), truth.Containers)
			}

			// Connections: the two sides are different processes; the
			// closed ones fold to the truth's edges; the apps' broker
			// connections stay open but across a restart.
			type side struct {
				pid   uint32
				start uint64
			}
			// An IP names the pod that holds it at the time: a pod
			// replaced gives its IP to the next.
			podOf := map[string]string{}
			open := map[string]side{} // local→remote of an open side
			edges := map[string]*TruthEdge{}
			for _, e := range evs {
				if pe := e.Event.GetPod(); pe.GetOp() == schema.PodEvent_OP_UPSERT {
					podOf[pe.GetPod().GetIps()[0]] = pe.GetPod().GetName()
				}
				tcp := e.Event.GetTcp()
				if tcp == nil {
					continue
				}
				la, _ := netip.AddrFromSlice(tcp.GetLocalAddr())
				ra, _ := netip.AddrFromSlice(tcp.GetRemoteAddr())
				key := fmt.Sprintf("%s:%d>%s:%d", la, tcp.GetLocalPort(), ra, tcp.GetRemotePort())
				switch tcp.GetPhase() {
				case schema.TCPPhase_TCP_PHASE_CONNECT, schema.TCPPhase_TCP_PHASE_ACCEPT:
					open[key] = side{e.Event.GetTask().GetPid(), tcp.GetStartUnixNano()}
					peer := fmt.Sprintf("%s:%d>%s:%d", ra, tcp.GetRemotePort(), la, tcp.GetLocalPort())
					if p, ok := open[peer]; ok && p.pid == e.Event.GetTask().GetPid() && podOf[la.String()] != podOf[ra.String()] {
						t.Fatalf("%s: both sides are pid %d", key, p.pid)
					}
				case schema.TCPPhase_TCP_PHASE_CLOSE:
					s, ok := open[key]
					if !ok {
						t.Fatalf("%s closed, never opened", key)
					}
					delete(open, key)
					if got := time.Duration(tcp.GetDurationNs()); e.Event.GetTimeUnixNano()-s.start != uint64(got) {
						t.Errorf("%s: duration %v, not close - start", key, got)
					}
					if tcp.GetRole() != schema.Role_ROLE_CLIENT {
						continue
					}
					ek := fmt.Sprintf("%s>%s:%d", podOf[la.String()], podOf[ra.String()], tcp.GetRemotePort())
					if edges[ek] == nil {
						edges[ek] = &TruthEdge{Client: podOf[la.String()], Server: podOf[ra.String()], Port: tcp.GetRemotePort()}
					}
					edges[ek].Count++
					edges[ek].BytesSent += tcp.GetBytesSent()
					edges[ek].BytesReceived += tcp.GetBytesReceived()
				}
			}
			if len(edges) != len(truth.Edges) {
				t.Errorf("%d edges from the events, truth has %d", len(edges), len(truth.Edges))
			}
			for _, w := range truth.Edges {
				got := edges[fmt.Sprintf("%s>%s:%d", w.Client, w.Server, w.Port)]
				if got == nil || *got != w {
					t.Errorf("edge %+v: events give %+v", w, got)
				}
			}
			apps := tc.nodes * (tc.pods - 1)
			if tc.stop {
				if len(open) != 0 || truth.Open != 0 || len(running) != 0 || execs != exits {
					t.Errorf("stopped: %d sides and %d processes still open, truth says %d connections", len(open), len(running), truth.Open)
				}
			} else if len(open) != 2*truth.Open || truth.Open < apps {
				t.Errorf("%d sides open, truth says %d connections: want both sides of each, and at least one per app pod (%d)", len(open), truth.Open, apps)
			}
			longClosed := 0
			for _, e := range truth.Edges {
				if e.Port == PortBroker && strings.HasPrefix(e.Server, RoleBroker) && e.BytesSent > 0 && e.Count > 0 {
					longClosed++
				}
			}
			if longClosed == 0 {
				t.Errorf("no broker edge in %+v", truth.Edges)
			}
			if !slices.ContainsFunc(truth.Edges, func(e TruthEdge) bool { return e.Port == PortShop }) && tc.pods > 2 {
				t.Errorf("no frontend → shop edge in %+v", truth.Edges)
			}
		})
	}
}
