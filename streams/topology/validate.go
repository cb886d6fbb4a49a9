package topology

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/weftobs/weft/streams/schema"
	"github.com/weftobs/weft/streams/stage"
)

var (
	// Stage names become Kubernetes object names, durable consumer names
	// and subject tokens: DNS-1123 labels.
	stageNameRe  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	streamNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// AppSidecar is the sidecarOf value naming the user's own pods.
const AppSidecar = "app"

// validate checks a decoded topology, adding every issue found.
func validate(t *Topology, reg *stage.Registry, is *issues) {
	if t.APIVersion != APIVersion {
		is.add(1, "", "apiVersion %q: this build reads %q", t.APIVersion, APIVersion)
	}
	if t.Kind != DocKind {
		is.add(1, "", "kind %q: want %q", t.Kind, DocKind)
	}
	if !stageNameRe.MatchString(t.Metadata.Name) {
		is.add(1, "", "metadata.name %q: want a DNS label (lowercase letters, digits, '-')", t.Metadata.Name)
	}
	validateStreams(t, is)
	validateStages(t, reg, is)
	validateFlow(t, is)
	addImplicitStreams(t)
}

func validateStreams(t *Topology, is *issues) {
	for _, s := range t.Streams {
		subj := streamSubject(s.Name)
		if !streamNameRe.MatchString(s.Name) {
			is.add(s.Line, subj, "a stream name has letters, digits, '_' and '-' only")
		}
		if len(s.Subjects) == 0 {
			is.add(s.Line, subj, "no subjects")
		}
		for _, sub := range s.Subjects {
			if err := checkSubject(sub); err != nil {
				is.add(s.Line, subj, "subject %q: %v", sub, err)
			}
		}
		switch s.Storage {
		case "", StorageFile, StorageMemory:
		default:
			is.add(s.Line, subj, "storage %q: want %q or %q", s.Storage, StorageFile, StorageMemory)
		}
		switch s.Compression {
		case "", CompressionS2, CompressionNone:
		default:
			is.add(s.Line, subj, "compression %q: want %q or %q", s.Compression, CompressionS2, CompressionNone)
		}
		switch s.OnDrift {
		case "", OnDriftApply, OnDriftKeep:
		default:
			is.add(s.Line, subj, "onDrift %q: want %q (the topology wins) or %q (live edits stay)", s.OnDrift, OnDriftApply, OnDriftKeep)
		}
		if s.Replicas < 0 || s.Replicas > 5 {
			is.add(s.Line, subj, "replicas %d: JetStream allows 1 to 5", s.Replicas)
		}
	}
	// Overlapping subjects: JetStream refuses to create the second stream,
	// and a message would have no single home.
	for i, a := range t.Streams {
		for _, b := range t.Streams[i+1:] {
			for _, sa := range a.Subjects {
				for _, sb := range b.Subjects {
					if SubjectsOverlap(sa, sb) {
						is.add(b.Line, streamSubject(b.Name), "subject %q overlaps %q of stream %q (line %d)", sb, sa, a.Name, a.Line)
					}
				}
			}
		}
	}
}

func validateStages(t *Topology, reg *stage.Registry, is *issues) {
	if len(t.Stages) == 0 {
		is.add(1, "", "no stages")
	}
	seen := map[string]int{}
	for _, st := range t.Stages {
		subj := stageSubject(st.Name)
		if !stageNameRe.MatchString(st.Name) {
			is.add(st.Line, subj, "a stage name is a DNS label (lowercase letters, digits, '-', at most 63)")
		}
		if prev, dup := seen[st.Name]; dup {
			is.add(st.Line, subj, "stage name used twice (first at line %d)", prev)
		}
		seen[st.Name] = st.Line
		k, ok := reg.Lookup(st.Kind)
		if !ok {
			msg := fmt.Sprintf("unknown kind %q (known: %s)", st.Kind, strings.Join(reg.Names(), ", "))
			if c := closest(st.Kind, reg.Names()); c != "" {
				msg = fmt.Sprintf("unknown kind %q (did you mean %q?)", st.Kind, c)
			}
			is.add(st.KeyLine("kind"), subj, "%s", msg)
		} else {
			if st.Deploy == "" {
				st.Deploy = k.Deploy[0]
			}
			if !slices.Contains(stage.DeployModes, st.Deploy) {
				is.add(st.KeyLine("deploy"), subj, "deploy %q: want one of %v", st.Deploy, stage.DeployModes)
			} else if !k.CanDeploy(st.Deploy) {
				is.add(st.KeyLine("deploy"), subj, "kind %q cannot be deployed as %q (it can: %v)", st.Kind, st.Deploy, k.Deploy)
			}
			if !k.Source && len(st.Inputs) == 0 {
				is.add(st.Line, subj, "kind %q needs at least one input", st.Kind)
			}
			if !k.Sink && len(st.Outputs) == 0 {
				is.add(st.Line, subj, "kind %q needs at least one output", st.Kind)
			}
			decodeConfig(st, k, is)
		}
		switch {
		case st.Deploy == stage.DeploySidecar && st.SidecarOf == "":
			is.add(st.KeyLine("deploy"), subj, "a sidecar stage needs sidecarOf: the stage whose pods it joins, or %q", AppSidecar)
		case st.Deploy != stage.DeploySidecar && st.SidecarOf != "":
			is.add(st.KeyLine("sidecarOf"), subj, "sidecarOf is only for deploy: sidecar")
		}
		if st.Replicas < 0 {
			is.add(st.KeyLine("replicas"), subj, "replicas %d < 0", st.Replicas)
		}
		if st.Replicas > 0 && (st.Deploy == stage.DeployDaemonSet || st.Deploy == stage.DeploySidecar) {
			is.add(st.KeyLine("replicas"), subj, "replicas is set by the %s's pods, not by the stage", st.Deploy)
		}
		if a := st.Autoscale; a != nil {
			if st.Deploy != stage.DeployDeployment && st.Deploy != stage.DeployStatefulSet {
				is.add(st.KeyLine("autoscale"), subj, "autoscale is for deployment and statefulset stages, not %s", st.Deploy)
			}
			if a.Min < 1 || a.Max < a.Min {
				is.add(st.KeyLine("autoscale"), subj, "autoscale min %d, max %d: want 1 <= min <= max", a.Min, a.Max)
			}
		}
		for _, in := range st.Inputs {
			if t.Stream(in) == nil {
				is.add(st.KeyLine("inputs"), subj, "input %q is not a declared stream", in)
			}
		}
		for _, out := range st.Outputs {
			if t.Stream(out) == nil {
				is.add(st.KeyLine("outputs"), subj, "output %q is not a declared stream", out)
			}
		}
	}
	for _, st := range t.Stages {
		if st.SidecarOf == "" || st.SidecarOf == AppSidecar {
			continue
		}
		host := t.Stage(st.SidecarOf)
		switch {
		case host == nil:
			is.add(st.KeyLine("sidecarOf"), stageSubject(st.Name), "sidecarOf %q names no stage (or use %q for your own pods)", st.SidecarOf, AppSidecar)
		case host == st:
			is.add(st.KeyLine("sidecarOf"), stageSubject(st.Name), "a stage cannot be its own sidecar")
		case host.Deploy == stage.DeploySidecar:
			is.add(st.KeyLine("sidecarOf"), stageSubject(st.Name), "sidecarOf %q is itself a sidecar", st.SidecarOf)
		}
	}
}

// validateFlow checks that every input is produced and that data flows
// without cycles.
func validateFlow(t *Topology, is *issues) {
	producers := map[string][]*Stage{}
	for _, st := range t.Stages {
		for _, out := range st.Outputs {
			producers[out] = append(producers[out], st)
		}
	}
	for _, st := range t.Stages {
		for _, in := range st.Inputs {
			if t.Stream(in) != nil && len(producers[in]) == 0 && in != schema.StreamDLQ {
				is.add(st.KeyLine("inputs"), stageSubject(st.Name), "input %q: no stage produces it", in)
			}
		}
	}
	if cycle := findCycle(t); cycle != nil {
		names := make([]string, len(cycle))
		for i, st := range cycle {
			names[i] = st.Name
		}
		is.add(cycle[0].Line, stageSubject(cycle[0].Name), "cycle: %s", strings.Join(append(names, names[0]), " → "))
	}
}

// Downstream returns the stages reading a stream st writes.
func (t *Topology) Downstream(st *Stage) []*Stage {
	var out []*Stage
	for _, o := range t.Stages {
		if o == st {
			continue
		}
		for _, in := range o.Inputs {
			if slices.Contains(st.Outputs, in) {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

func findCycle(t *Topology) []*Stage {
	const (
		white = iota
		grey
		black
	)
	color := map[*Stage]int{}
	var stack []*Stage
	var found []*Stage
	var visit func(*Stage) bool
	visit = func(s *Stage) bool {
		color[s] = grey
		stack = append(stack, s)
		for _, d := range t.Downstream(s) {
			switch color[d] {
			case grey:
				i := slices.Index(stack, d)
				found = slices.Clone(stack[i:])
				return true
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[s] = black
		return false
	}
	for _, s := range t.Stages {
		if color[s] == white && visit(s) {
			return found
		}
	}
	return nil
}

// Order returns the stages sources first: every stage comes after the
// stages whose outputs it reads. The topology must be acyclic.
func (t *Topology) Order() []*Stage {
	indeg := map[*Stage]int{}
	for _, s := range t.Stages {
		for _, d := range t.Downstream(s) {
			indeg[d]++
		}
	}
	var order, ready []*Stage
	for _, s := range t.Stages {
		if indeg[s] == 0 {
			ready = append(ready, s)
		}
	}
	for len(ready) > 0 {
		s := ready[0]
		ready = ready[1:]
		order = append(order, s)
		for _, d := range t.Downstream(s) {
			if indeg[d]--; indeg[d] == 0 {
				ready = append(ready, d)
			}
		}
	}
	return order
}

// addImplicitStreams adds the DLQ stream when the topology does not
// declare it: every consuming stage may dead-letter.
func addImplicitStreams(t *Topology) {
	if t.Stream(schema.StreamDLQ) == nil {
		t.Streams = append(t.Streams, &Stream{
			Name: schema.StreamDLQ, Subjects: []string{schema.DLQPrefix + ">"}, Implicit: true,
		})
	}
}

// checkSubject checks a stream subject filter.
func checkSubject(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return fmt.Errorf("empty token")
		case tok == ">" && i != len(toks)-1:
			return fmt.Errorf("'>' must be the last token")
		case strings.ContainsAny(tok, " \t\r\n"):
			return fmt.Errorf("whitespace in a subject")
		case len(tok) > 1 && strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("wildcard inside token %q", tok)
		}
	}
	return nil
}

// SubjectsOverlap reports whether some subject matches both filters.
func SubjectsOverlap(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(ta) && i == len(tb):
			return true
		case i == len(ta) || i == len(tb):
			return false
		case ta[i] == ">" || tb[i] == ">":
			return true
		case ta[i] == "*" || tb[i] == "*" || ta[i] == tb[i]:
			continue
		default:
			return false
		}
	}
}
