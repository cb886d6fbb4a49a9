package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/weftobs/weft/streams/stage"
)

// Load reads, decodes and validates the topology in file.
func Load(file string, reg *stage.Registry) (*Topology, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return Parse(file, data, reg)
}

// Parse decodes and validates a topology. file names it in messages. The
// returned error is an *Error listing every issue found; on error the
// topology is returned too (as far as it decoded) for tools that show it.
func Parse(file string, data []byte, reg *stage.Registry) (*Topology, error) {
	is := &issues{file: file}
	t := &Topology{File: file}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			is.add(1, "", "empty file: a topology is a mapping with apiVersion, kind, metadata, streams and stages")
			return nil, is.err()
		}
		is.add(max(1, yamlErrLine(err)), "", "%s", cleanMsg(err.Error()))
		return nil, is.err()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		is.add(extra.Line, "", "more than one YAML document: a file holds one topology")
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		is.add(doc.Line, "", "a topology is a mapping with apiVersion, kind, metadata, streams and stages")
		return nil, is.err()
	}
	root := doc.Content[0]
	checkKeys(root, reflect.TypeOf(Topology{}), "", is)
	if err := root.Decode(t); err != nil {
		addDecodeErr(is, err, "")
	}
	t.File = file
	t.Streams = decodeStreams(&t.RawStreams, is)
	stagesNode := mapValue(root, "stages")
	if n := stagesNode; n != nil && n.Kind == yaml.SequenceNode {
		for i, sn := range n.Content {
			if i >= len(t.Stages) || t.Stages[i] == nil {
				continue
			}
			st := t.Stages[i]
			st.Line = sn.Line
			st.keys = map[string]int{}
			for k := 0; k+1 < len(sn.Content); k += 2 {
				st.keys[sn.Content[k].Value] = sn.Content[k].Line
			}
		}
	}
	t.Stages = dropEmptyStages(t.Stages, stagesNode, is)
	validate(t, reg, is)
	return t, is.err()
}

// dropEmptyStages reports and removes the items of the stages list that
// decoded to no stage (an empty "-" item, or null), so validation and the
// tools showing a topology see only stages.
func dropEmptyStages(stages []*Stage, n *yaml.Node, is *issues) []*Stage {
	kept := stages[:0]
	for i, st := range stages {
		if st != nil {
			kept = append(kept, st)
			continue
		}
		line := 1
		if n != nil && n.Kind == yaml.SequenceNode && i < len(n.Content) {
			line = n.Content[i].Line
		}
		is.add(line, "", "stages[%d]: an empty item; a stage is a mapping with name, kind, inputs and outputs", i)
	}
	return kept
}

func decodeStreams(n *yaml.Node, is *issues) []*Stream {
	if n.Kind == 0 {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		is.add(n.Line, "", "streams: want a mapping of stream name to {subjects, maxAge, …}")
		return nil
	}
	var out []*Stream
	for k := 0; k+1 < len(n.Content); k += 2 {
		name, v := n.Content[k].Value, n.Content[k+1]
		s := &Stream{Name: name, Line: n.Content[k].Line}
		checkKeys(v, reflect.TypeOf(Stream{}), streamSubject(name), is)
		if err := v.Decode(s); err != nil {
			addDecodeErr(is, err, streamSubject(name))
		}
		s.Name, s.Line = name, n.Content[k].Line
		out = append(out, s)
	}
	return out
}

// checkKeys reports every mapping key that t has no field for, recursing
// into nested structs, slices and maps, so all typos are listed at once
// (yaml.v3's KnownFields stops at the first).
func checkKeys(n *yaml.Node, t reflect.Type, subject string, is *issues) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil || t == reflect.TypeOf(yaml.Node{}) {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f
			names = append(names, tag)
		}
		sort.Strings(names)
		for k := 0; k+1 < len(n.Content); k += 2 {
			key := n.Content[k].Value
			f, ok := fields[key]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", key)
				if s := closest(key, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else {
					msg += fmt.Sprintf(" (known: %s)", strings.Join(names, ", "))
				}
				is.add(n.Content[k].Line, subjectOf(n, t, subject), "%s", msg)
				continue
			}
			checkKeys(n.Content[k+1], f.Type, subjectOf(n, t, subject), is)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for _, c := range n.Content {
			checkKeys(c, t.Elem(), subject, is)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for k := 1; k < len(n.Content); k += 2 {
			checkKeys(n.Content[k], t.Elem(), subject, is)
		}
	}
}

// subjectOf names the stage a mapping node is, when it is one.
func subjectOf(n *yaml.Node, t reflect.Type, subject string) string {
	if t != reflect.TypeOf(Stage{}) {
		return subject
	}
	if v := mapValue(n, "name"); v != nil {
		return stageSubject(v.Value)
	}
	return "stage at line " + strconv.Itoa(n.Line)
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for k := 0; k+1 < len(n.Content); k += 2 {
		if n.Content[k].Value == key {
			return n.Content[k+1]
		}
	}
	return nil
}

// closest returns the candidate within edit distance 2 of s, if any.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var lineRe = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := lineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// addDecodeErr adds every error of a yaml.TypeError, each at its line.
func addDecodeErr(is *issues, err error, subject string) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, e := range te.Errors {
			is.add(max(1, yamlErrLine(errors.New(e))), subject, "%s", cleanMsg(e))
		}
		return
	}
	is.add(max(1, yamlErrLine(err)), subject, "%s", cleanMsg(err.Error()))
}

var linePrefixRe = regexp.MustCompile(`^(yaml: )?(line \d+: )+`)

func cleanMsg(s string) string { return linePrefixRe.ReplaceAllString(s, "") }

// decodeConfig decodes a stage's config strictly into the kind's type and
// validates it.
func decodeConfig(st *Stage, k stage.Kind, is *issues) {
	subject := stageSubject(st.Name)
	if k.NewConfig == nil {
		if st.RawConfig.Kind != 0 && len(st.RawConfig.Content) > 0 {
			is.add(st.KeyLine("config"), subject, "kind %q takes no config", k.Name)
		}
		return
	}
	cfg := k.NewConfig()
	if st.RawConfig.Kind != 0 {
		checkKeys(&st.RawConfig, reflect.TypeOf(cfg), subject, is)
		if err := st.RawConfig.Decode(cfg); err != nil {
			addDecodeErr(is, err, subject)
			return
		}
	}
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			for _, e := range splitJoined(err) {
				is.add(st.KeyLine("config"), subject, "config: %v", e)
			}
		}
	}
	st.Config = cfg
}

func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return slices.Collect(func(yield func(error) bool) {
			for _, e := range j.Unwrap() {
				if !yield(e) {
					return
				}
			}
		})
	}
	return []error{err}
}
