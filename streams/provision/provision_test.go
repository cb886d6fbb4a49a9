package provision_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/topology"
	"github.com/weftobs/weft/testenv/natstest"
)

func TestEnsureStreams(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	topo := &topology.Topology{Streams: []*topology.Stream{
		{Name: "EVENTS", Subjects: []string{"weft.events.>"}, MaxAge: topology.Duration(time.Hour), Replicas: 3},
		{Name: "DLQ", Subjects: []string{"weft.dlq.>"}},
	}}
	res, err := provision.EnsureStreams(ctx, s.JS, topo, provision.Options{MaxReplicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Action != provision.Created || len(res[0].Notes) != 1 || !strings.Contains(res[0].Notes[0], "replicas 3 reduced to 1") {
		t.Fatalf("first ensure: %+v", res)
	}
	ev, _ := s.JS.Stream(ctx, "EVENTS")
	if got := ev.CachedInfo().Config.Compression; got != jetstream.S2Compression {
		t.Fatalf("EVENTS compression %v, want s2 by default", got)
	}
	dlq, _ := s.JS.Stream(ctx, "DLQ")
	if got := dlq.CachedInfo().Config.MaxAge; got != provision.DefaultDLQMaxAge {
		t.Fatalf("DLQ max age %v, want the default %v", got, provision.DefaultDLQMaxAge)
	}

	// Same again: unchanged.
	res, err = provision.EnsureStreams(ctx, s.JS, topo, provision.Options{MaxReplicas: 1})
	if err != nil || res[0].Action != provision.Unchanged {
		t.Fatalf("second ensure: %+v, %v", res, err)
	}

	// A limit change is applied in place.
	topo.Streams[0].MaxAge = topology.Duration(2 * time.Hour)
	res, err = provision.EnsureStreams(ctx, s.JS, topo, provision.Options{MaxReplicas: 1})
	if err != nil || res[0].Action != provision.Updated {
		t.Fatalf("max age change: %+v, %v", res, err)
	}
	st, _ := s.JS.Stream(ctx, "EVENTS")
	if st.CachedInfo().Config.MaxAge != 2*time.Hour {
		t.Fatalf("max age %v after update", st.CachedInfo().Config.MaxAge)
	}

	// Storage cannot change in place: reported, stream untouched.
	topo.Streams[0].Storage = topology.StorageMemory
	res, err = provision.EnsureStreams(ctx, s.JS, topo, provision.Options{MaxReplicas: 1})
	if err == nil || !strings.Contains(err.Error(), "stream EVENTS: cannot apply in place: storage File → Memory") {
		t.Fatalf("storage change: %v", err)
	}
	if res[0].Action != provision.Refused || len(res[0].Drift) != 2 || res[0].Drift[0].Field != "storage" || res[0].Drift[1].Field != "compression" {
		t.Fatalf("storage change: %+v", res[0])
	}
	st, _ = s.JS.Stream(ctx, "EVENTS")
	if st.CachedInfo().Config.Storage != jetstream.FileStorage {
		t.Fatal("storage changed")
	}
}
