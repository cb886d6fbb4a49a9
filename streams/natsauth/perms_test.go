package natsauth

import (
	"slices"
	"strings"
	"testing"

	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

const hybrid = `apiVersion: weft.dev/v1
kind: Topology
metadata: {name: hybrid}
streams:
  EVENTS: {subjects: ["weft.events.>"]}
  CALLS:  {subjects: ["weft.calls.>"]}
  DLQ:    {subjects: ["weft.dlq.>"]}
stages:
  - {name: collector,  kind: src, deploy: daemonset, outputs: [EVENTS]}
  - {name: correlator, kind: correlator, deploy: deployment, inputs: [EVENTS], outputs: [CALLS]}
  - {name: graph,      kind: sink, deploy: deployment, inputs: [CALLS]}
  - {name: node-otlp,  kind: sink, deploy: sidecar, sidecarOf: collector, inputs: [EVENTS]}
`

func testTopology(t testing.TB) *topology.Topology {
	t.Helper()
	// The permissions read only a topology; kinds that build nothing do.
	none := func(stage.Settings) (stage.Stage, error) { return nil, nil }
	reg := stage.NewRegistry()
	for _, k := range []stage.Kind{
		{Name: "src", Source: true, Deploy: []stage.DeployMode{stage.DeployDaemonSet}, New: none},
		{Name: "correlator", Deploy: []stage.DeployMode{stage.DeployDeployment}, New: none},
		{Name: "sink", Sink: true, Deploy: []stage.DeployMode{stage.DeployDeployment, stage.DeploySidecar}, New: none},
	} {
		reg.Register(k)
	}
	top, err := topology.Parse("hybrid.yaml", []byte(hybrid), reg)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// TestForStages: each identity gets its job's subjects and no other's,
// compared with the whole expected list.
func TestForStages(t *testing.T) {
	top := testTopology(t)
	info := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.CALLS", "$JS.API.STREAM.INFO.DLQ", "$JS.API.STREAM.INFO.EVENTS"}
	provision := []string{"$JS.API.STREAM.CREATE.CALLS", "$JS.API.STREAM.CREATE.DLQ", "$JS.API.STREAM.CREATE.EVENTS",
		"$JS.API.STREAM.UPDATE.CALLS", "$JS.API.STREAM.UPDATE.DLQ", "$JS.API.STREAM.UPDATE.EVENTS"}
	consume := func(s string) []string {
		return []string{"$JS.ACK." + s + ".>", "$JS.API.CONSUMER.CREATE." + s + ".>", "$JS.API.CONSUMER.DELETE." + s + ".*",
			"$JS.API.CONSUMER.DURABLE.CREATE." + s + ".*", "$JS.API.CONSUMER.INFO." + s + ".*", "$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
			"$JS.API.STREAM.MSG.GET." + s}
	}
	// the correlator's replicas' group: their bucket, and the pins of
	// their partitions' consumers
	group := []string{"$JS.API.STREAM.INFO.KV_weft-group-correlator", "$JS.API.STREAM.CREATE.KV_weft-group-correlator",
		"$JS.API.STREAM.UPDATE.KV_weft-group-correlator", "$JS.API.STREAM.PURGE.KV_weft-group-correlator",
		"$KV.weft-group-correlator.>", "$JS.API.CONSUMER.UNPIN.EVENTS.*"}
	tests := []struct {
		stages []string
		node   string
		pub    [][]string
		sub    string
	}{
		{[]string{"collector", "node-otlp"}, "ip-10-0-0-1.ec2.internal",
			[][]string{info, consume("EVENTS"), {"weft.dlq.collector", "weft.dlq.node-otlp", "weft.events.ip-10-0-0-1_ec2_internal", "weft.events.ip-10-0-0-1_ec2_internal.>"}},
			"_INBOX.collector+node-otlp.ip-10-0-0-1_ec2_internal.>"},
		{[]string{"correlator"}, "n1", [][]string{info, provision, consume("EVENTS"), group, {"weft.calls.>", "weft.dlq.correlator"}}, "_INBOX.correlator.>"},
		{[]string{"graph"}, "n1", [][]string{info, provision, consume("CALLS"), {"weft.dlq.graph"}}, "_INBOX.graph.>"},
	}
	for _, tt := range tests {
		t.Run(tt.stages[0], func(t *testing.T) {
			p, err := ForStages(top, tt.stages, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(slices.Values(slices.Concat(tt.pub...)))
			if !slices.Equal(p.Publish, want) {
				t.Errorf("publish\n got %q\nwant %q", p.Publish, want)
			}
			if !slices.Equal(p.Subscribe, []string{tt.sub}) {
				t.Errorf("subscribe %q, want [%q]", p.Subscribe, tt.sub)
			}
		})
	}
	if _, err := ForStages(top, []string{"nope"}, "n1"); err == nil {
		t.Error("a stage the topology lacks has permissions")
	}
}

// TestForOperator: the operator reads every stream, publishes to their
// subjects (replay --to, redrive), deletes from the DLQ only, and may
// neither change a stream nor touch a stage's bucket; compared with the
// whole expected list.
func TestForOperator(t *testing.T) {
	p := ForOperator(testTopology(t))
	want := []string{"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.MSG.DELETE.DLQ",
		"weft.events.>", "weft.calls.>", "weft.dlq.>"}
	for _, s := range []string{"EVENTS", "CALLS", "DLQ"} {
		want = append(want, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.CONSUMER.LIST."+s,
			"$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.INFO."+s+".*", "$JS.API.CONSUMER.DELETE."+s+".*", "$JS.API.CONSUMER.MSG.NEXT."+s+".*", "$JS.ACK."+s+".>")
	}
	slices.Sort(want)
	if !slices.Equal(p.Publish, want) {
		t.Errorf("publish\n got %q\nwant %q", p.Publish, want)
	}
	if !slices.Equal(p.Subscribe, []string{"_INBOX._operator.>"}) {
		t.Errorf("subscribe %q", p.Subscribe)
	}
	for _, stage := range []string{"collector", "correlator", "graph", "node-otlp"} {
		if s := InboxPrefix(testTopology(t), []string{stage}, "n1"); s == OperatorInboxPrefix || strings.HasPrefix(s, OperatorInboxPrefix+".") {
			t.Errorf("stage %s's inbox %s is the operator's", stage, s)
		}
	}
}

// TestConfigValidate: an identities file names its namespace, audience,
// account and stages, and no service account is both a stage's and the
// operator's (the operator's rights would depend on which check runs
// first).
func TestConfigValidate(t *testing.T) {
	ok := Config{Namespace: "weft", Audience: "weft-nats", Account: "WEFT",
		ServiceAccounts: map[string][]string{"weft-graph": {"graph"}}, Operators: []string{"weft-operator"}}
	tests := []struct {
		name string
		edit func(*Config)
		want []string // in the error; none: valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no operator", func(c *Config) { c.Operators = nil }, nil},
		{"empty", func(c *Config) { *c = Config{} }, []string{"namespace is empty", "audience is empty", "account is empty", "serviceAccounts is empty"}},
		{"operator runs a stage", func(c *Config) { c.Operators = []string{"weft-graph"} }, []string{"service account weft-graph is both an operator and a stage's"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (len(tt.want) == 0) {
				t.Fatalf("Validate: %v, want errors %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %v, want %q", err, w)
				}
			}
		})
	}
}
