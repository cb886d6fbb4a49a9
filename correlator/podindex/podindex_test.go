package podindex

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// TestApply: what each pod event returns (a pod changed or ended, or
// nothing) and what the index then resolves, event by event, in order.
func TestApply(t *testing.T) {
	ip := netip.MustParseAddr("10.0.1.20")
	early := &schema.Pod{Uid: "u1", Name: "report-1", Namespace: "batch", Ips: []string{"10.0.1.20"}}
	named := proto.Clone(early).(*schema.Pod)
	named.Containers = []*schema.Container{{Id: "c1", Name: "report", Image: "example/report:1"}}
	relabelled := proto.Clone(named).(*schema.Pod)
	relabelled.Labels = map[string]string{"team": "billing"}
	ghost := &schema.Pod{Uid: "u2", Name: "ghost-1", Namespace: "batch", Ips: []string{"10.0.1.21"}}
	up := func(p *schema.Pod) *schema.PodEvent { return &schema.PodEvent{Op: schema.PodEvent_OP_UPSERT, Pod: p} }
	down := func(p *schema.Pod) *schema.PodEvent { return &schema.PodEvent{Op: schema.PodEvent_OP_DELETE, Pod: p} }

	x := New(0, 0)
	for _, tc := range []struct {
		name            string
		t               uint64
		ev              *schema.PodEvent
		changed, ended  *schema.Pod
		container, atIP string // what c1 and the address resolve to after it ("": nothing)
	}{
		{"first announcement: no news", 10, up(early), nil, nil, "", "report-1"},
		{"the same again: no news", 11, up(proto.Clone(early).(*schema.Pod)), nil, nil, "", "report-1"},
		{"its container named: changed", 20, up(named), named, nil, "report", "report-1"},
		{"an older announcement, redelivered: ignored", 15, up(early), nil, nil, "report", "report-1"},
		{"new labels: changed", 30, up(relabelled), relabelled, nil, "report", "report-1"},
		{"deleted: ended, as last announced", 40, down(early), nil, relabelled, "report", ""},
		{"deleted again: nothing", 41, down(early), nil, nil, "report", ""},
		{"a late upsert of the deleted pod: nothing", 50, up(named), nil, nil, "report", ""},
		{"a delete of a pod never announced: ended as the delete says", 60, down(ghost), nil, ghost, "report", ""},
		{"its late upsert: nothing", 61, up(ghost), nil, nil, "report", ""},
	} {
		changed, ended := x.Apply(tc.t, tc.ev)
		if !proto.Equal(changed, tc.changed) || !proto.Equal(ended, tc.ended) {
			t.Errorf("%s: changed %v ended %v, want %v %v", tc.name, changed, ended, tc.changed, tc.ended)
		}
		if got := x.Container("c1").GetName(); got != tc.container {
			t.Errorf("%s: container c1 is %q, want %q", tc.name, got, tc.container)
		}
		if got := x.PodAt(ip, tc.t+1).GetName(); got != tc.atIP {
			t.Errorf("%s: %s resolves to %q, want %q", tc.name, ip, got, tc.atIP)
		}
	}
	if got := x.PodAt(netip.MustParseAddr("10.0.1.21"), 70).GetName(); got != "" {
		t.Errorf("the ghost's address resolves to %q after its late upsert, want nothing", got)
	}
}
