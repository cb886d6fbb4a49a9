package graph_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/streams/schema"
)

// mixedCalls are n calls drawn at random from endpoints of every kind the
// fold tells apart: pods with and without metadata, containers with and
// without a name, a host-network pod, a pod whose IP and name change, a
// server that is a broker by label, by port, by socket path or by the
// correlator's mark, processes, external peers, unix sockets.
func mixedCalls(n int, seed uint64) []*schema.Call {
	r := rand.New(rand.NewPCG(seed, 1))
	owners := []*schema.OwnerRef{{Kind: "ReplicaSet", Name: "web-7d9f", Uid: "rs-web", Controller: true}}
	web := &schema.OwnerRef{Kind: "Deployment", Name: "web", Uid: "deploy-web", Controller: true}
	pods := []*schema.Pod{
		{Uid: "p1", Name: "web-7d9f-x2x4z", Namespace: "shop", Node: "n1", Ips: []string{"10.0.0.1"}, Owners: owners, Workload: web, Labels: map[string]string{"a": "1", "b": "2", "c": "3"}},
		{Uid: "p1"}, // known by uid only (no metadata yet)
		{Uid: "p2", Name: "nats-0", Namespace: "infra", Node: "n2", Ips: []string{"10.0.0.2"}, Labels: map[string]string{"app.kubernetes.io/name": "nats", "x": "y"}},
		{Uid: "p3", Name: "redis", Namespace: "infra", Node: "n1", Ips: []string{"192.168.0.1"}, HostNetwork: true},
		{Uid: "p4", Name: "db-0", Namespace: "data", Node: "n2", Ips: []string{"10.0.0.4"}},
		{Uid: "p4", Name: "db-0", Namespace: "data", Node: "n2", Ips: []string{"10.0.0.44"}}, // its IP changed
		{Uid: "p4", Name: "db-0-renamed", Namespace: "data", Node: "n2", Ips: []string{"10.0.0.44"}},
	}
	ctrs := []*schema.Container{nil, {Id: "c1", Name: "web", Image: "web:1"}, {Id: "c1"}, {Id: "c2", Name: "nats"},
		{Id: "c3", Name: "crypto-broker"}, {Id: "c4", Name: "db", Image: "db:2"}, {Id: ""}}
	ep := func() *schema.Endpoint {
		switch r.IntN(10) {
		case 0:
			return &schema.Endpoint{Node: "n1", Address: []byte{1, 2, 3, 4}, External: true}
		case 1:
			return &schema.Endpoint{Node: "n2", Task: &schema.Task{Exe: "/usr/bin/curl", Comm: "curl"}}
		case 2:
			return &schema.Endpoint{Node: "n2", Task: &schema.Task{Comm: "sh"}}
		}
		e := &schema.Endpoint{Node: []string{"n1", "n2", ""}[r.IntN(3)], Address: []byte{10, 0, 0, byte(r.IntN(5))},
			Pod: pods[r.IntN(len(pods))], Container: ctrs[r.IntN(len(ctrs))]}
		if r.IntN(8) == 0 {
			e.BrokerKind = "kafka"
		}
		return e
	}
	var out []*schema.Call
	for i := range n {
		c := &schema.Call{Id: fmt.Sprintf("call-%d", i), Transport: schema.Transport_TRANSPORT_TCP, Port: []uint32{4222, 80, 5432}[r.IntN(3)],
			BytesSent: uint64(r.IntN(100)), BytesReceived: uint64(r.IntN(1000)), StartUnixNano: uint64(i * 10), EndUnixNano: uint64(max(0, i*10+r.IntN(30)-5)),
			Client: ep(), Server: ep()}
		if i > 0 && r.IntN(2) == 0 {
			// Between endpoints met before: the short way, when in the
			// same window.
			prev := out[max(0, i-1-r.IntN(100))]
			c.Client, c.Server, c.Transport, c.Port, c.Path = prev.Client, prev.Server, prev.Transport, prev.Port, prev.Path
		}
		if r.IntN(5) == 0 {
			c.Transport, c.Port, c.Path = schema.Transport_TRANSPORT_UNIX, 0, []string{"/run/crypto-broker/a.sock", "/tmp/x.sock"}[r.IntN(2)]
		}
		if r.IntN(10) == 0 {
			c.Errno = -111
		}
		if r.IntN(20) == 0 && i > 0 {
			c.Halves = []string{fmt.Sprintf("call-%d", r.IntN(i))} // emitted again
		}
		out = append(out, c)
	}
	return out
}

// encode writes calls as CALLS messages of size calls, each encoded as
// the publisher does (map entries in random order).
func encode(t testing.TB, calls []*schema.Call, size int) [][]byte {
	var out [][]byte
	for i := 0; i < len(calls); i += size {
		data, err := proto.Marshal(&schema.CallBatch{SchemaVersion: schema.Version, Calls: calls[i:min(i+size, len(calls))]})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// canonical sorts a batch's rows so equal batches compare equal.
func canonical(b *graph.Batch) *graph.Batch {
	link := func(l graph.Link) string { return l.Type + " " + l.From.ID() + " " + l.To.ID() }
	edge := func(d graph.EdgeDelta) string {
		return fmt.Sprintf("%s %s %s %d %s", d.From.ID(), d.To.ID(), d.Transport, d.Port, d.Path)
	}
	sort.Slice(b.Entities, func(i, j int) bool { return b.Entities[i].Ref.ID() < b.Entities[j].Ref.ID() })
	sort.Slice(b.Links, func(i, j int) bool { return link(b.Links[i]) < link(b.Links[j]) })
	sort.Slice(b.Edges, func(i, j int) bool { return edge(b.Edges[i]) < edge(b.Edges[j]) })
	return b
}

// TestFoldSharedMessagesAsLongWay: calls whose endpoints share their pod
// and container messages (a CallDecoder's), folded the short way for a
// pair seen before in the window, give the very batches that calls
// decoded each on their own (the long way every time) give.
func TestFoldSharedMessagesAsLongWay(t *testing.T) {
	for seed := range uint64(5) {
		msgs := encode(t, mixedCalls(3000, seed), 50)
		shared, own := graph.NewFold(graph.DefaultBrokers, graph.NewSeen(0)), graph.NewFold(graph.DefaultBrokers, graph.NewSeen(0))
		d := schema.NewCallDecoder()
		for i, m := range msgs {
			a, err := d.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			b, err := schema.DecodeCallBatch(m)
			if err != nil {
				t.Fatal(err)
			}
			for j := range a.GetCalls() {
				if x, y := shared.Add(a.Calls[j]), own.Add(b.Calls[j]); x != y {
					t.Fatalf("seed %d, call %s: added %v, the long way %v", seed, a.Calls[j].GetId(), x, y)
				}
			}
			if i%7 == 6 || i == len(msgs)-1 {
				got, want := canonical(shared.Take(uint64(i))), canonical(own.Take(uint64(i)))
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d, batch %d differs from the long way's:\n%+v\nwant\n%+v", seed, i, got, want)
				}
			}
		}
	}
}

// TestWrittenLeavesOutWhatTheStoreHolds: with a Written record, batches
// leave out nodes and links the store was given unchanged, and the store
// ends with the same graph after every batch; a node whose properties or
// broker mark change is written again; a new record (a restarted store)
// writes everything again.
func TestWrittenLeavesOutWhatTheStoreHolds(t *testing.T) {
	ctx := context.Background()
	calls := mixedCalls(4000, 42)
	all, skip := graph.NewFold(graph.DefaultBrokers, nil), graph.NewFold(graph.DefaultBrokers, nil)
	skip.SkipWritten(graph.NewWritten(0))
	full, lean := memstore.New(), memstore.New()
	var allRows, leanRows int // node and link rows
	for i := 0; i < len(calls); i += 200 {
		for _, c := range calls[i : i+200] {
			all.Add(c)
			skip.Add(c)
		}
		a, b := all.Take(uint64(i+1)), skip.Take(uint64(i+1))
		if i == 0 && b.Rows() != a.Rows() {
			t.Errorf("first batch: %d rows, want all %d", b.Rows(), a.Rows())
		}
		if !reflect.DeepEqual(canonical(b).Edges, canonical(a).Edges) {
			t.Fatalf("batch %d: edges differ", i)
		}
		allRows, leanRows = allRows+len(a.Entities)+len(a.Links), leanRows+len(b.Entities)+len(b.Links)
		if err := full.Apply(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := lean.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		g1, _ := full.Graph(ctx)
		g2, _ := lean.Graph(ctx)
		if !reflect.DeepEqual(g1, g2) {
			t.Fatalf("after batch %d the graphs differ:\n%+v\nwant\n%+v", i, g2, g1)
		}
	}
	if leanRows*3 > allRows {
		t.Errorf("%d node and link rows written, against %d writing them each batch: want at most a third", leanRows, allRows)
	}

	// A node that changes is written; one that does not, not.
	w := graph.NewWritten(0)
	f := graph.NewFold(nil, nil)
	f.SkipWritten(w)
	pod := func(ip, broker string) *schema.Call {
		return &schema.Call{Id: "x" + ip + broker, Client: &schema.Endpoint{Node: "n1", Pod: &schema.Pod{Uid: "p", Name: "p", Namespace: "ns", Ips: []string{ip}}},
			Server: &schema.Endpoint{Node: "n2", Task: &schema.Task{Exe: "nats-server"}, BrokerKind: broker}}
	}
	rows := func(c *schema.Call) []string {
		f.Add(c)
		var ids []string
		for _, e := range f.Take(1).Entities {
			ids = append(ids, e.Ref.ID())
		}
		sort.Strings(ids)
		return ids
	}
	for _, tc := range []struct {
		call *schema.Call
		want []string
	}{
		{pod("10.0.0.1", ""), []string{"Node:n1", "Node:n2", "Pod:p", "Process:n2/nats-server"}},
		{pod("10.0.0.1", ""), nil},
		{pod("10.0.0.2", ""), []string{"Pod:p"}},
		{pod("10.0.0.2", "nats"), []string{"Process:n2/nats-server"}},
		{pod("10.0.0.2", "nats"), nil},
	} {
		if got := rows(tc.call); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("call %s: wrote %v, want %v", tc.call.GetId(), got, tc.want)
		}
	}
	f.SkipWritten(graph.NewWritten(0))
	if got := rows(pod("10.0.0.2", "nats")); len(got) != 4 {
		t.Errorf("after a new record: wrote %v, want every node", got)
	}
}

// TestFoldWorkloads checks who owns each pod in the graph: the top
// controller only (never the ReplicaSet or Job in between), one Workload
// for every ReplicaSet of a Deployment across a rollout, the controller
// of a pod written before workloads were resolved, and nothing for a bare
// pod.
func TestFoldWorkloads(t *testing.T) {
	ref := func(kind, name string) *schema.OwnerRef {
		return &schema.OwnerRef{Kind: kind, Name: name, Uid: "uid-" + name, Controller: true}
	}
	pods := []*schema.Pod{
		{Uid: "p1", Name: "web-7d9f8c-aaaaa", Namespace: "shop", Owners: []*schema.OwnerRef{ref("ReplicaSet", "web-7d9f8c")}, Workload: ref("Deployment", "web")},
		{Uid: "p2", Name: "web-5c6b4d-bbbbb", Namespace: "shop", Owners: []*schema.OwnerRef{ref("ReplicaSet", "web-5c6b4d")}, Workload: ref("Deployment", "web")},
		{Uid: "p3", Name: "backup-29431200-ccccc", Namespace: "shop", Owners: []*schema.OwnerRef{ref("Job", "backup-29431200")}, Workload: ref("CronJob", "backup")},
		{Uid: "p4", Name: "nats-0", Namespace: "infra", Owners: []*schema.OwnerRef{ref("StatefulSet", "nats")}, Workload: ref("StatefulSet", "nats")},
		{Uid: "p5", Name: "old-0", Namespace: "infra", Owners: []*schema.OwnerRef{ref("DaemonSet", "old")}}, // no workload field
		{Uid: "p6", Name: "debug", Namespace: "shop"},
	}
	f := graph.NewFold(nil, nil)
	for i, p := range pods {
		f.Add(&schema.Call{Id: fmt.Sprint(i), Transport: schema.Transport_TRANSPORT_TCP, Port: 80,
			Client: &schema.Endpoint{Pod: p}, Server: &schema.Endpoint{Pod: pods[5]}})
	}
	st := memstore.New()
	if err := st.Apply(context.Background(), f.Take(1)); err != nil {
		t.Fatal(err)
	}
	g, _ := st.Graph(context.Background())
	var got []string
	for _, e := range g.Edges {
		if e.Type == graph.RelOwns {
			got = append(got, e.From+" -> "+e.To)
		}
	}
	sort.Strings(got)
	want := []string{
		"Workload:CronJob/shop/backup -> Pod:p3",
		"Workload:DaemonSet/infra/old -> Pod:p5",
		"Workload:Deployment/shop/web -> Pod:p1",
		"Workload:Deployment/shop/web -> Pod:p2",
		"Workload:StatefulSet/infra/nats -> Pod:p4",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OWNS\n got %q\nwant %q", got, want)
	}
}
