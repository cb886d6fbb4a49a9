package graph

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Selection is a part of the graph: what GET /api/v1/graph returns for
// ?namespace=, ?since= and ?node=&depth=. The zero Selection is the whole
// graph. Either store reads its graph and Apply selects, so both answer a
// selection the same.
type Selection struct {
	// Namespaces keeps the pods and workloads of these namespaces, the
	// containers of those pods, and whatever they call or is called by.
	Namespaces []string
	// Since keeps the CALLS relationships last seen at or after it (Unix
	// nanoseconds; 0 keeps all), and drops pods, containers, processes
	// and addresses left without one.
	Since int64
	// Node keeps the node with this id (and what it holds: a workload's
	// pods, a pod's containers) and what lies within Depth CALLS of it,
	// either way.
	Node  string
	Depth int
}

// MaxDepth bounds Selection.Depth.
const MaxDepth = 5

// ParseSelection reads a selection from a query string: namespace
// (repeated, or comma-separated), since (a duration before now, "5m",
// or an RFC 3339 time), node and depth (default 1 with node).
func ParseSelection(q url.Values, now time.Time) (Selection, error) {
	var s Selection
	for _, v := range q["namespace"] {
		for _, ns := range strings.Split(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				s.Namespaces = append(s.Namespaces, ns)
			}
		}
	}
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			s.Since = now.Add(-d).UnixNano()
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			s.Since = t.UnixNano()
		} else {
			return s, fmt.Errorf("since %q: want a positive duration (5m) or an RFC 3339 time", v)
		}
	}
	s.Node = q.Get("node")
	if v := q.Get("depth"); v != "" {
		d, err := strconv.Atoi(v)
		if err != nil || d < 0 || d > MaxDepth {
			return s, fmt.Errorf("depth %q: want 0 to %d", v, MaxDepth)
		}
		if s.Node == "" {
			return s, fmt.Errorf("depth %q: needs node", v)
		}
		s.Depth = d
	} else if s.Node != "" {
		s.Depth = 1
	}
	return s, nil
}

// Whole reports whether s selects the whole graph.
func (s Selection) Whole() bool { return len(s.Namespaces) == 0 && s.Since == 0 && s.Node == "" }

// Apply returns the part of g that s selects: the nodes it keeps, the
// nodes that hold them (a container's pod, a pod's workload and node),
// and every relationship between kept nodes (CALLS only within Since).
// It does not change g; the result shares g's property maps.
func (s Selection) Apply(g *Graph) *Graph {
	if s.Whole() {
		return g
	}
	byID := make(map[string]*GNode, len(g.Nodes))
	for i := range g.Nodes {
		byID[g.Nodes[i].ID] = &g.Nodes[i]
	}
	inWindow := func(e *GEdge) bool {
		return e.Type != RelCalls || s.Since == 0 || toInt64(e.Props["last_seen"]) >= s.Since
	}
	// holders[id] are the nodes that hold id; held[id] those id holds.
	holders, held := map[string][]string{}, map[string][]string{}
	var calls []*GEdge
	for i := range g.Edges {
		e := &g.Edges[i]
		switch e.Type {
		case RelHasContainer, RelOwns:
			holders[e.To] = append(holders[e.To], e.From)
			held[e.From] = append(held[e.From], e.To)
		case RelRunsOn:
			holders[e.From] = append(holders[e.From], e.To)
			held[e.To] = append(held[e.To], e.From)
		case RelCalls:
			if inWindow(e) {
				calls = append(calls, e)
			}
		}
	}
	keep := map[string]bool{}
	switch {
	case s.Node != "":
		if byID[s.Node] == nil {
			break
		}
		frontier := closeOver([]string{s.Node}, held)
		for _, id := range frontier {
			keep[id] = true
		}
		for range s.Depth {
			at := map[string]bool{}
			for _, id := range frontier {
				at[id] = true
			}
			frontier = nil
			for _, e := range calls {
				for _, p := range [][2]string{{e.From, e.To}, {e.To, e.From}} {
					if at[p[0]] && !keep[p[1]] {
						keep[p[1]] = true
						frontier = append(frontier, p[1])
					}
				}
			}
		}
	default:
		for _, n := range g.Nodes {
			keep[n.ID] = true
		}
	}
	if len(s.Namespaces) > 0 {
		var ns []string
		for id := range keep {
			n := byID[id]
			if v, _ := n.Props["namespace"].(string); (n.Labels[0] == LabelPod || n.Labels[0] == LabelWorkload) && slices.Contains(s.Namespaces, v) {
				ns = append(ns, id)
			}
		}
		inNS := map[string]bool{}
		for _, id := range closeOver(ns, held) {
			inNS[id] = true
		}
		next := map[string]bool{}
		for id := range inNS {
			if keep[id] {
				next[id] = true
			}
		}
		for _, e := range calls {
			if keep[e.From] && keep[e.To] && (inNS[e.From] || inNS[e.To]) {
				next[e.From], next[e.To] = true, true
			}
		}
		keep = next
	}
	if s.Since != 0 {
		// Endpoints stay only with a call in the window; what holds
		// them comes back below.
		active := map[string]bool{}
		for _, e := range calls {
			active[e.From], active[e.To] = true, true
		}
		for id := range keep {
			if l := byID[id].Labels[0]; l != LabelNode && l != LabelWorkload && !active[id] {
				delete(keep, id)
			}
		}
		for id := range keep {
			if l := byID[id].Labels[0]; (l == LabelNode || l == LabelWorkload) && !holdsAny(id, held, keep) && !active[id] {
				delete(keep, id)
			}
		}
	}
	// What holds a kept node is kept, up to the top (container → pod →
	// workload, pod → node).
	up := make([]string, 0, len(keep))
	for id := range keep {
		up = append(up, id)
	}
	for _, id := range closeOver(up, holders) {
		keep[id] = true
	}
	out := &Graph{Nodes: []GNode{}, Edges: []GEdge{}}
	for _, n := range g.Nodes {
		if keep[n.ID] {
			out.Nodes = append(out.Nodes, n)
		}
	}
	for i := range g.Edges {
		e := &g.Edges[i]
		if keep[e.From] && keep[e.To] && inWindow(e) {
			out.Edges = append(out.Edges, *e)
		}
	}
	return out
}

// closeOver returns ids and everything reachable from them through next.
func closeOver(ids []string, next map[string][]string) []string {
	seen := map[string]bool{}
	var out []string
	for len(ids) > 0 {
		id := ids[len(ids)-1]
		ids = ids[:len(ids)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
		ids = append(ids, next[id]...)
	}
	return out
}

func holdsAny(id string, held map[string][]string, keep map[string]bool) bool {
	for _, c := range held[id] {
		if keep[c] {
			return true
		}
	}
	return false
}

// toInt64 reads a number as the stores and JSON give it.
func toInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case uint64:
		return int64(x)
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}
