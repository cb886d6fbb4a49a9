package schema_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

var update = flag.Bool("update", false, "rewrite the fixtures of the CURRENT schema version (never the v1 ones)")

// v1Batch is the batch the v1 fixture was written from. Never change it,
// nor testdata/v1_*.bin: they stand for messages already stored in users'
// streams, which every later build must read.
func v1Batch() *schema.EventBatch {
	return &schema.EventBatch{
		SchemaVersion: 1,
		Origin:        &schema.Origin{Node: "node-a", BootId: "6c1c8e0e-59b5-4bb6-9df1-3f1b0e0a2f11", Epoch: 1763715600000000000, Seq: 42, Stage: "collector"},
		Events: []*schema.Event{
			{TimeUnixNano: 1763715600123456789,
				Task: &schema.Task{Pid: 4242, Tid: 4242, Ppid: 1, Uid: 1000, Comm: "app", Exe: "/usr/bin/app", CgroupId: 9876,
					ContainerId: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", PodUid: "5f0c2a52-7b1e-4c7e-9d1f-0a1b2c3d4e5f",
					Attribution: schema.Attribution_ATTRIBUTION_POD},
				Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CLOSE, Role: schema.Role_ROLE_CLIENT,
					LocalAddr: []byte{10, 0, 0, 2}, LocalPort: 40000, RemoteAddr: []byte{10, 0, 0, 3}, RemotePort: 4222,
					BytesSent: 1234, BytesReceived: 5678, DurationNs: 1500000, SockCookie: 77, StartUnixNano: 1763715600000000000}}},
			{TimeUnixNano: 1763715600200000000, Task: &schema.Task{Pid: 4243, Comm: "sh"},
				Body: &schema.Event_Exec{Exec: &schema.ProcessExec{Argv: []string{"sh", "-c", "true"}}}},
			{TimeUnixNano: 1763715600300000000, Task: &schema.Task{Pid: 4243, Comm: "sh"},
				Body: &schema.Event_Exit{Exit: &schema.ProcessExit{ExitCode: 3, LifetimeNs: 100000000}}},
			{TimeUnixNano: 1763715600400000000, Task: &schema.Task{Pid: 4244, Comm: "app"},
				Body: &schema.Event_Unix{Unix: &schema.UnixEvent{Phase: schema.UnixPhase_UNIX_PHASE_CONNECT, Role: schema.Role_ROLE_CLIENT,
					Path: "/var/run/broker/broker.sock", SockType: 1, Peer: &schema.Task{Pid: 4245, Comm: "broker"}}}},
			{TimeUnixNano: 1763715600500000000,
				Body: &schema.Event_Pod{Pod: &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: &schema.Pod{
					Uid: "5f0c2a52-7b1e-4c7e-9d1f-0a1b2c3d4e5f", Name: "app-7d9f", Namespace: "shop", Node: "node-a",
					Ips: []string{"10.0.0.2"}, Labels: map[string]string{"app": "shop"},
					Owners:     []*schema.OwnerRef{{Kind: "Deployment", Name: "app", Controller: true}},
					Containers: []*schema.Container{{Id: "0123", Name: "app", Image: "shop/app:1"}}}}}},
		},
	}
}

func v1CallBatch() *schema.CallBatch {
	return &schema.CallBatch{
		SchemaVersion: 1,
		Origin:        &schema.Origin{Node: "node-a", BootId: "b", Epoch: 1, Seq: 7, Stage: "correlator"},
		Calls: []*schema.Call{{
			Id: "c1", Transport: schema.Transport_TRANSPORT_TCP, Port: 4222, BytesSent: 10, BytesReceived: 20,
			StartUnixNano: 1, EndUnixNano: 2,
			Client: &schema.Endpoint{Node: "node-a", Address: []byte{10, 0, 0, 2}, Port: 40000, Pod: &schema.Pod{Uid: "p1", Name: "app"}},
			Server: &schema.Endpoint{Node: "node-b", Address: []byte{10, 0, 0, 3}, Port: 4222, BrokerKind: "nats"},
		}},
	}
}

// TestV1FixturesDecode reads messages written by schema version 1. It must
// pass in every release: streams outlive releases, and replay reads them.
func TestV1FixturesDecode(t *testing.T) {
	for _, tc := range []struct {
		file   string
		want   proto.Message
		decode func([]byte) (proto.Message, error)
	}{
		{"v1_event_batch.bin", v1Batch(), func(b []byte) (proto.Message, error) { return schema.DecodeEventBatch(b) }},
		{"v1_call_batch.bin", v1CallBatch(), func(b []byte) (proto.Message, error) { return schema.DecodeCallBatch(b) }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			if *update {
				if _, err := os.Stat(path); err == nil {
					t.Fatalf("%s exists: v1 fixtures are frozen; add a v2 fixture instead", path)
				}
				data, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.want)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read fixture: %v", err)
			}
			got, err := tc.decode(data)
			if err != nil {
				t.Fatalf("decode v1 fixture: %v", err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("v1 fixture decoded to\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	future, _ := proto.Marshal(&schema.EventBatch{SchemaVersion: schema.Version + 1})
	noBody, _ := proto.Marshal(&schema.EventBatch{SchemaVersion: 1, Events: []*schema.Event{{TimeUnixNano: 1}}})
	for _, tc := range []struct {
		name    string
		data    []byte
		wantVer bool
	}{
		{"garbage", []byte("this is not protobuf \xff\xff\xff"), false},
		{"no version", []byte{}, true},
		{"future version", future, true},
		{"event without body", noBody, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schema.DecodeEventBatch(tc.data)
			if err == nil {
				t.Fatal("decoded; want an error")
			}
			if tc.wantVer != errors.Is(err, schema.ErrVersion) {
				t.Fatalf("err %v: ErrVersion %v, want %v", err, errors.Is(err, schema.ErrVersion), tc.wantVer)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{schema.EventSubject("ip-10-0-0-1.ec2.internal", schema.KindTCP), "weft.events.ip-10-0-0-1_ec2_internal.tcp"},
		{schema.EventSubject("", schema.KindPod), "weft.events._.pod"},
		{schema.CallSubject("node a"), "weft.calls.node_a"},
		{schema.DLQSubject("graph"), "weft.dlq.graph"},
		{schema.DLQSubject("x>*"), "weft.dlq.x__"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// FuzzDecodeEventBatch: any input either decodes to a batch that encodes
// again, or returns an error; it never panics. The seed corpus is in
// testdata/fuzz/FuzzDecodeEventBatch.
func FuzzDecodeEventBatch(f *testing.F) {
	good, _ := proto.Marshal(v1Batch())
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add(bytes.Repeat([]byte{0xff}, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := schema.DecodeEventBatch(data)
		if err != nil {
			return
		}
		out, err := proto.Marshal(b)
		if err != nil {
			t.Fatalf("decoded batch does not encode: %v", err)
		}
		if _, err := schema.DecodeEventBatch(out); err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
	})
}
