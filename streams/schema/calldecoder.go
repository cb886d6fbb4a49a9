package schema

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// CallDecoder decodes CALLS message bodies to what DecodeCallBatch returns
// (proto.Equal), several times faster on a real stream. A stream repeats
// itself: the pods, containers and tasks of its calls are a few thousand
// distinct ones carried again and again, encoded alike (but for the order
// of a pod's labels). The decoder decodes each distinct encoding once,
// with the generated code, and shares the result among the calls that
// carry it (one message per pod, whatever its labels' order); it builds the
// calls and their endpoints around them itself, interning node names and
// addresses. Anything it does not handle exactly as the generated decoder
// would (an unknown field, a field repeated that merges, invalid UTF-8, a
// malformed message) sends the whole body through DecodeCallBatch instead,
// which also gives the error.
//
// The calls returned share their Pod, Container and Task messages, node
// strings and address slices with other calls from the same decoder: they
// are read-only. A CallDecoder is not safe for concurrent use; its memory
// is bounded by its caches, which are emptied when they fill up.
type CallDecoder struct {
	pods       subCache[Pod, *Pod]
	containers subCache[Container, *Container]
	tasks      subCache[Task, *Task]
	strs       map[string]string
	addrs      map[string][]byte
	// expanded are the tasks of compacted endpoints with their ids put
	// back, by the task met and the ids put in.
	expanded map[expandKey]*Task
	refs     batchRefs // of the message being decoded
}

type expandKey struct {
	task     *Task
	pod, ctr string
}

// decoderCacheSize bounds each of the decoder's caches: distinct pods,
// containers, tasks (processes), node names, addresses.
const decoderCacheSize = 1 << 14

// NewCallDecoder returns a decoder with empty caches.
func NewCallDecoder() *CallDecoder {
	return &CallDecoder{
		pods: newSubCache[Pod](), containers: newSubCache[Container](), tasks: newSubCache[Task](),
		strs: map[string]string{}, addrs: map[string][]byte{}, expanded: map[expandKey]*Task{},
	}
}

// Decode decodes a CALLS message body, as DecodeCallBatch does.
func (d *CallDecoder) Decode(data []byte) (*CallBatch, error) {
	b, ok := d.batch(data)
	if !ok {
		return DecodeCallBatch(data)
	}
	if err := checkVersion(b.GetSchemaVersion()); err != nil {
		return DecodeCallBatch(data) // the same error, worded by one place
	}
	return b, nil
}

func (d *CallDecoder) batch(data []byte) (*CallBatch, bool) {
	n := 0
	if !eachField(data, func(num protowire.Number, typ protowire.Type, _ uint64, _ []byte) bool {
		if num == BatchItemsField && typ == protowire.BytesType {
			n++
		}
		return true
	}) {
		return nil, false
	}
	b := &CallBatch{}
	clear(d.refs.pods)
	clear(d.refs.ctrs)
	calls := make([]Call, n)
	eps := make([]Endpoint, 2*n)
	if n > 0 {
		b.Calls = make([]*Call, 0, n)
	}
	ok := eachField(data, func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) bool {
		switch {
		case num == 1 && typ == protowire.VarintType:
			b.SchemaVersion = uint32(v)
		case num == 2 && typ == protowire.BytesType:
			// The publisher writes the origin twice (its sequence
			// separately), for protobuf to merge: merge too.
			if b.Origin == nil {
				b.Origin = &Origin{}
			}
			return (proto.UnmarshalOptions{Merge: true}).Unmarshal(raw, b.Origin) == nil
		case num == BatchItemsField && typ == protowire.BytesType:
			i := len(b.Calls)
			c := &calls[i]
			if !d.call(raw, c, &eps[2*i], &eps[2*i+1]) {
				return false
			}
			b.Calls = append(b.Calls, c)
		case num == PodsEndedField && typ == protowire.BytesType:
			// Rare (a pod deleted): the generated decoder, nothing shared.
			e := &PodEnded{}
			if proto.Unmarshal(raw, e) != nil {
				return false
			}
			b.PodsEnded = append(b.PodsEnded, e)
		case num == PodsChangedField && typ == protowire.BytesType:
			// Rare too (a pod's metadata changed).
			e := &PodChanged{}
			if proto.Unmarshal(raw, e) != nil {
				return false
			}
			b.PodsChanged = append(b.PodsChanged, e)
		default:
			return false
		}
		return true
	})
	return b, ok
}

// call decodes one Call into c, its endpoints into cli and srv.
func (d *CallDecoder) call(data []byte, c *Call, cli, srv *Endpoint) bool {
	if !d.callFields(data, c, cli, srv) || !d.refs.resolve(c.Client) || !d.refs.resolve(c.Server) {
		return false // an unresolved reference: DecodeCallBatch words the error
	}
	if c.HalvesAfterId {
		c.Halves = append([]string{c.Id}, c.Halves...)
		c.HalvesAfterId = false
	}
	return true
}

func (d *CallDecoder) callFields(data []byte, c *Call, cli, srv *Endpoint) bool {
	return eachField(data, func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) bool {
		switch typ {
		case protowire.VarintType:
			switch num {
			case 2:
				c.Transport = Transport(int32(v))
			case 5:
				c.Port = uint32(v)
			case 7:
				c.BytesSent = v
			case 8:
				c.BytesReceived = v
			case 11:
				c.Errno = int32(v)
			case 13:
				c.DialedPort = uint32(v)
			case 14:
				c.Partial = protowire.DecodeBool(v)
			case 16:
				c.State = CallState(int32(v))
			case 17:
				c.PriorBytesSent = v
			case 18:
				c.PriorBytesReceived = v
			case 20:
				c.HalvesAfterId = protowire.DecodeBool(v)
			default:
				return false
			}
		case protowire.Fixed64Type:
			switch num {
			case 9:
				c.StartUnixNano = v
			case 10:
				c.EndUnixNano = v
			case 19:
				c.SinceUnixNano = v
			default:
				return false
			}
		default: // bytes
			switch num {
			case 1:
				if !utf8.Valid(raw) {
					return false
				}
				c.Id = string(raw)
			case 3:
				if c.Client != nil || !d.endpoint(raw, cli) {
					return false // a repeated message field merges: not here
				}
				c.Client = cli
			case 4:
				if c.Server != nil || !d.endpoint(raw, srv) {
					return false
				}
				c.Server = srv
			case 6:
				if !utf8.Valid(raw) {
					return false
				}
				c.Path = d.intern(raw)
			case 12:
				c.DialedAddress = d.addr(raw)
			case 15:
				if !utf8.Valid(raw) {
					return false
				}
				h := c.Id // a call's id is most often its first half
				if string(raw) != h {
					h = string(raw)
				}
				if c.Halves == nil {
					c.Halves = make([]string, 0, 2)
				}
				c.Halves = append(c.Halves, h)
			default:
				return false
			}
		}
		return true
	})
}

// endpoint decodes one Endpoint into e, its task's ids put back when the
// writer left them out (CompactCall).
func (d *CallDecoder) endpoint(data []byte, e *Endpoint) bool {
	if !d.endpointFields(data, e) {
		return false
	}
	if e.TaskIdsFromEndpoint {
		e.TaskIdsFromEndpoint = false
		if e.Task != nil {
			e.Task = d.expand(e.Task, e.Pod.GetUid(), e.Container.GetId())
		}
	}
	return true
}

// expand is t with pod and ctr as its ids, shared by every endpoint that
// puts back the same ids into the same task.
func (d *CallDecoder) expand(t *Task, pod, ctr string) *Task {
	k := expandKey{t, pod, ctr}
	if x, ok := d.expanded[k]; ok {
		return x
	}
	if len(d.expanded) >= decoderCacheSize {
		clear(d.expanded)
	}
	x := proto.Clone(t).(*Task)
	x.PodUid, x.ContainerId = pod, ctr
	d.expanded[k] = x
	return x
}

func (d *CallDecoder) endpointFields(data []byte, e *Endpoint) bool {
	return eachField(data, func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) bool {
		switch typ {
		case protowire.VarintType:
			switch num {
			case 3:
				e.Port = uint32(v)
			case 7:
				e.External = protowire.DecodeBool(v)
			case 20:
				e.TaskIdsFromEndpoint = protowire.DecodeBool(v)
			case 21:
				e.PodInBatch = protowire.DecodeBool(v)
			case 22:
				e.ContainerInBatch = protowire.DecodeBool(v)
			default:
				return false
			}
		case protowire.BytesType:
			switch num {
			case 1, 8:
				if !utf8.Valid(raw) {
					return false
				}
				if num == 1 {
					e.Node = d.intern(raw)
				} else {
					e.BrokerKind = d.intern(raw)
				}
			case 2:
				e.Address = d.addr(raw)
			case 4:
				if e.Task != nil {
					return false // a repeated message field merges: not here
				}
				e.Task = d.tasks.get(raw)
				return e.Task != nil
			case 5:
				if e.Pod != nil {
					return false
				}
				e.Pod = d.pods.get(raw)
				return e.Pod != nil
			case 6:
				if e.Container != nil {
					return false
				}
				e.Container = d.containers.get(raw)
				return e.Container != nil
			default:
				return false
			}
		default:
			return false
		}
		return true
	})
}

// eachField calls f with every field of an encoded message — its number,
// wire type, and value (v for a varint or fixed64, raw for bytes) — and
// reports whether the message is well-formed and f took every field. Any
// other wire type (groups, fixed32: none in a call) is not taken.
func eachField(data []byte, f func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) bool) bool {
	for len(data) > 0 {
		num, typ, l := protowire.ConsumeTag(data)
		if l < 0 {
			return false
		}
		data = data[l:]
		var v uint64
		var raw []byte
		switch typ {
		case protowire.VarintType:
			v, l = protowire.ConsumeVarint(data)
		case protowire.Fixed64Type:
			v, l = protowire.ConsumeFixed64(data)
		case protowire.BytesType:
			raw, l = protowire.ConsumeBytes(data)
		default:
			return false
		}
		if l < 0 || !f(num, typ, v, raw) {
			return false
		}
		data = data[l:]
	}
	return true
}

func (d *CallDecoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if len(d.strs) >= decoderCacheSize {
		clear(d.strs)
	}
	s := string(b)
	d.strs[s] = s
	return s
}

func (d *CallDecoder) addr(b []byte) []byte {
	if a, ok := d.addrs[string(b)]; ok {
		return a
	}
	if len(d.addrs) >= decoderCacheSize {
		clear(d.addrs)
	}
	a := append([]byte(nil), b...)
	d.addrs[string(b)] = a
	return a
}

// subCache maps the encoding of a message to the message decoded from it.
// Encodings of one message differ in the order of its map entries (a
// pod's labels: protobuf randomises it unless told to be deterministic),
// so every encoding of one message maps to one decoded message, found by
// its deterministic encoding: the calls that carry one pod share it
// however the writer ordered its labels.
type subCache[M any, P interface {
	*M
	proto.Message
}] struct {
	m         map[string]P // by the encoding met
	canonical map[string]P // by the deterministic encoding
}

func newSubCache[M any, P interface {
	*M
	proto.Message
}]() subCache[M, P] {
	return subCache[M, P]{m: map[string]P{}, canonical: map[string]P{}}
}

// get returns the message encoded by b, or nil when b does not decode.
func (c *subCache[M, P]) get(b []byte) P {
	if m, ok := c.m[string(b)]; ok {
		return m
	}
	m := P(new(M))
	if err := proto.Unmarshal(b, m); err != nil {
		return nil
	}
	if len(c.m) >= decoderCacheSize {
		clear(c.m)
		clear(c.canonical)
	}
	if det, err := (proto.MarshalOptions{Deterministic: true}).Marshal(m); err == nil {
		if first, ok := c.canonical[string(det)]; ok {
			m = first
		} else {
			c.canonical[string(det)] = m
		}
	}
	c.m[string(b)] = m
	return m
}
