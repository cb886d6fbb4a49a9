package natsauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/weftobs/weft/streams/group"
	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/topology"
)

// Permissions are the subjects one identity may publish and subscribe to.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// InboxPrefix is the prefix of the reply subjects of a process that runs
// stages of t on node: its own, so that no other identity can read the
// replies it gets (a pull consumer's messages arrive on them). The
// process sets it on its connection (natsconn.Options.InboxPrefix) and
// Permissions lets it subscribe under it. A node-local stage's prefix
// names its node.
func InboxPrefix(t *topology.Topology, stages []string, node string) string {
	p := "_INBOX." + schema.Token(strings.Join(stages, "+"))
	if anyNodeLocal(t, stages) {
		p += "." + schema.Token(node)
	}
	return p
}

func anyNodeLocal(t *topology.Topology, stages []string) bool {
	for _, n := range stages {
		if def := t.Stage(n); def != nil && t.NodeLocal(def) {
			return true
		}
	}
	return false
}

// ForStages are the permissions of a process that runs stages of t on
// node, as the cluster runs them (weft run --stage):
//
//   - publish to the subjects of its output streams; a node-local stage
//     (a collector's DaemonSet) only to its node's: weft.events.<node>.>
//     for a stream declared weft.events.>;
//   - publish to its own dead-letter subject, weft.dlq.<stage>, and no
//     other stage's;
//   - on its input streams, the JetStream API of a pull consumer (create,
//     info, delete, next message) and acks; nothing on streams it does
//     not read;
//   - stream info on every stream of the topology, and create/update on
//     them for stages that are not node-local (a process provisions the
//     streams when it starts, see provision.EnsureStreams; the node-local
//     ones wait for them);
//   - subscribe only to its own inboxes (InboxPrefix).
//
// Consumer names are granted by stream, not by durable: a NATS subject
// wildcard matches whole tokens only, and a stage's durables are
// <stage>-<stream>[-<node>]-style names, not a token of their own.
func ForStages(t *topology.Topology, stages []string, node string) (Permissions, error) {
	if len(stages) == 0 {
		return Permissions{}, fmt.Errorf("no stages")
	}
	pub := []string{"$JS.API.INFO"}
	provisioner := false
	for _, name := range stages {
		def := t.Stage(name)
		if def == nil {
			return Permissions{}, fmt.Errorf("topology %s has no stage %q", t.Metadata.Name, name)
		}
		local := t.NodeLocal(def)
		provisioner = provisioner || !local
		for _, out := range def.Outputs {
			s := t.Stream(out)
			if s == nil {
				continue
			}
			for _, subj := range s.Subjects {
				if local {
					pub = append(pub, nodeSubjects(subj, node)...)
				} else {
					pub = append(pub, subj)
				}
			}
		}
		pub = append(pub, schema.DLQSubject(name))
		for _, in := range def.Inputs {
			pub = append(pub,
				"$JS.API.CONSUMER.CREATE."+in+".>",
				"$JS.API.CONSUMER.DURABLE.CREATE."+in+".*",
				"$JS.API.CONSUMER.INFO."+in+".*",
				"$JS.API.CONSUMER.DELETE."+in+".*",
				"$JS.API.CONSUMER.MSG.NEXT."+in+".*",
				"$JS.ACK."+in+".>",
				// a message by sequence: the graph stage reads one whose
				// delivery was lost, and its dedupe warm-up
				"$JS.API.STREAM.MSG.GET."+in,
			)
		}
		if def.Kind == "correlator" {
			// Its replicas' group (streams/group): a KV bucket of live
			// members, and the pin of each partition's consumer, released
			// when a partition moves.
			kv := group.Bucket(name)
			pub = append(pub, "$JS.API.STREAM.INFO.KV_"+kv, "$JS.API.STREAM.CREATE.KV_"+kv,
				"$JS.API.STREAM.UPDATE.KV_"+kv, "$JS.API.STREAM.PURGE.KV_"+kv, "$KV."+kv+".>")
			for _, in := range def.Inputs {
				pub = append(pub, "$JS.API.CONSUMER.UNPIN."+in+".*")
			}
		}
	}
	for _, s := range t.Streams {
		pub = append(pub, "$JS.API.STREAM.INFO."+s.Name)
		if provisioner {
			pub = append(pub, "$JS.API.STREAM.CREATE."+s.Name, "$JS.API.STREAM.UPDATE."+s.Name)
		}
	}
	slices.Sort(pub)
	return Permissions{
		Publish:   slices.Compact(pub),
		Subscribe: []string{InboxPrefix(t, stages, node) + ".>"},
	}, nil
}

// nodeSubjects narrows a stream's subject to node: weft.events.> becomes
// weft.events.<node> and weft.events.<node>.>, the first wildcard token
// taking the node. A subject with no wildcard is taken as it is.
func nodeSubjects(subj, node string) []string {
	toks := strings.Split(subj, ".")
	for i, tok := range toks {
		switch tok {
		case "*":
			toks[i] = schema.Token(node)
			return []string{strings.Join(toks, ".")}
		case ">":
			base := strings.Join(append(toks[:i:i], schema.Token(node)), ".")
			return []string{base, base + ".>"}
		}
	}
	return []string{subj}
}

// OperatorInboxPrefix is the prefix of the reply subjects of weft's
// operator commands (weft streams, replay, dlq): the operator identity
// may subscribe under it and nowhere else. No stage's prefix can equal
// it: a stage name has no underscore.
const OperatorInboxPrefix = "_INBOX._operator"

// ForOperator are the permissions of the operator identity on t's
// streams: what weft streams, weft replay and weft dlq do, and no more.
//
//   - stream list, and per stream its info, a message by sequence, the
//     list of its consumers (streams info), and the consumer API with
//     acks (replay and dlq read through temporary consumers; the
//     consumer's name is a token of the subject, so it is granted per
//     stream, as to the stages);
//   - publish to every stream's subjects: replay --to runs a stage, which
//     publishes its outputs and dead letters, and dlq redrive sends a
//     letter back to the subject it came from (or, failing again, to the
//     DLQ);
//   - delete a message from the DLQ only (redrive removes a letter once
//     republished).
//
// It may not create, update, purge or delete a stream, nor touch a
// stage's key-value buckets: the topology, applied by the stages, says
// what the streams are.
func ForOperator(t *topology.Topology) Permissions {
	pub := []string{"$JS.API.INFO", "$JS.API.STREAM.LIST"}
	for _, s := range t.Streams {
		pub = append(pub, s.Subjects...)
		n := s.Name
		pub = append(pub,
			"$JS.API.STREAM.INFO."+n,
			"$JS.API.STREAM.MSG.GET."+n,
			"$JS.API.CONSUMER.LIST."+n,
			"$JS.API.CONSUMER.CREATE."+n+".>",
			"$JS.API.CONSUMER.INFO."+n+".*",
			"$JS.API.CONSUMER.DELETE."+n+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+n+".*",
			"$JS.ACK."+n+".>",
		)
		if n == schema.StreamDLQ {
			pub = append(pub, "$JS.API.STREAM.MSG.DELETE."+n)
		}
	}
	slices.Sort(pub)
	return Permissions{Publish: slices.Compact(pub), Subscribe: []string{OperatorInboxPrefix + ".>"}}
}
