package publish_test

import (
	"context"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/publish"
	"github.com/weftobs/weft/streams/schema"
)

type recorder struct{ subjects []string }

func (r *recorder) Publish(_ context.Context, subject string, _ proto.Message) error {
	r.subjects = append(r.subjects, subject)
	return nil
}

// TestPartitioned: connection events go to their partition's subject,
// everything else (pod events, calls, one partition) passes unchanged.
func TestPartitioned(t *testing.T) {
	client := netip.MustParseAddrPort("10.0.1.5:20001")
	conn := &schema.Event{Body: &schema.Event_Tcp{Tcp: &schema.TCPEvent{Phase: schema.TCPPhase_TCP_PHASE_CONNECT,
		LocalAddr: client.Addr().AsSlice(), LocalPort: uint32(client.Port()), RemoteAddr: []byte{10, 96, 0, 10}, RemotePort: 4222}}}
	unix := &schema.Event{Body: &schema.Event_Unix{Unix: &schema.UnixEvent{SockCookie: 7, PeerSockCookie: 9}}}
	pod := &schema.Event{Body: &schema.Event_Pod{Pod: &schema.PodEvent{}}}
	cases := []struct {
		name    string
		n       int
		subject string
		item    proto.Message
		want    string
	}{
		{"tcp", 8, schema.EventSubject("node-a", schema.KindTCP), conn, schema.PartitionSubject("node-a", schema.KindTCP, schema.Partition(conn, 8), 8)},
		{"unix", 8, schema.EventSubject("node-a", schema.KindUnix), unix, schema.PartitionSubject("node-a", schema.KindUnix, schema.Partition(unix, 8), 8)},
		{"pod", 8, schema.EventSubject("node-a", schema.KindPod), pod, "weft.events.node-a.pod"},
		{"one partition", 1, schema.EventSubject("node-a", schema.KindTCP), conn, "weft.events.node-a.tcp"},
		{"a call", 8, schema.CallSubject("node-a"), &schema.Call{}, "weft.calls.node-a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &recorder{}
			if err := publish.Partitioned(r, c.n).Publish(context.Background(), c.subject, c.item); err != nil {
				t.Fatal(err)
			}
			if len(r.subjects) != 1 || r.subjects[0] != c.want {
				t.Fatalf("published to %v, want %s", r.subjects, c.want)
			}
		})
	}
	if got := schema.PartitionSubject("node-a", schema.KindTCP, schema.Partition(conn, 8), 8); got == "weft.events.node-a.tcp" {
		t.Fatalf("8 partitions gave the unpartitioned subject %s", got)
	}
}
