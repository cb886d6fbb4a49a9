package topology

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats Render writes.
var Formats = []string{"text", "json", "dot", "mermaid"}

// Render writes t in format: text (a table for people), json (for tools),
// dot (Graphviz) or mermaid (Markdown diagrams).
func Render(w io.Writer, t *Topology, format string) error {
	switch format {
	case "", "text":
		return renderText(w, t)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	case "dot":
		return renderDOT(w, t)
	case "mermaid":
		return renderMermaid(w, t)
	default:
		return fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
	}
}

func renderText(w io.Writer, t *Topology) error {
	fmt.Fprintf(w, "topology %s (%s)\n\nstreams:\n", t.Metadata.Name, t.File)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tSUBJECTS\tMAX AGE\tMAX BYTES\tREPLICAS\tSTORAGE")
	for _, s := range t.Streams {
		storage := s.Storage
		if storage == "" {
			storage = StorageFile
		}
		name := s.Name
		if s.Implicit {
			name += " (implicit)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", name, strings.Join(s.Subjects, ","),
			orDash(s.MaxAge != 0, time.Duration(s.MaxAge).String()), orDash(s.MaxBytes != 0, fmt.Sprint(int64(s.MaxBytes))),
			orDash(s.Replicas != 0, fmt.Sprint(s.Replicas)), storage)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nstages (sources first):\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tKIND\tDEPLOY\tINPUTS\tOUTPUTS")
	for _, s := range t.Order() {
		deploy := string(s.Deploy)
		switch {
		case s.SidecarOf != "":
			deploy += " of " + s.SidecarOf
		case s.Replicas > 0:
			deploy += fmt.Sprintf(" ×%d", s.Replicas)
		}
		if s.Autoscale != nil {
			deploy += fmt.Sprintf(" (autoscale %d–%d)", s.Autoscale.Min, s.Autoscale.Max)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, deploy,
			orDash(len(s.Inputs) > 0, strings.Join(s.Inputs, ",")), orDash(len(s.Outputs) > 0, strings.Join(s.Outputs, ",")))
	}
	return tw.Flush()
}

func orDash(ok bool, s string) string {
	if !ok {
		return "-"
	}
	return s
}

// usedStreams are the streams some stage reads or writes, in file order.
func usedStreams(t *Topology) []*Stream {
	var out []*Stream
	for _, s := range t.Streams {
		for _, st := range t.Stages {
			if slices.Contains(st.Inputs, s.Name) || slices.Contains(st.Outputs, s.Name) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func renderDOT(w io.Writer, t *Topology) error {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n", t.Metadata.Name)
	for _, s := range usedStreams(t) {
		fmt.Fprintf(&b, "  %q [shape=cylinder, label=%q];\n", "stream:"+s.Name, s.Name+"\n"+strings.Join(s.Subjects, "\n"))
	}
	for _, st := range t.Stages {
		label := fmt.Sprintf("%s\n%s · %s", st.Name, st.Kind, st.Deploy)
		fmt.Fprintf(&b, "  %q [shape=box, style=rounded, label=%q];\n", "stage:"+st.Name, label)
	}
	for _, st := range t.Stages {
		for _, in := range st.Inputs {
			fmt.Fprintf(&b, "  %q -> %q;\n", "stream:"+in, "stage:"+st.Name)
		}
		for _, out := range st.Outputs {
			fmt.Fprintf(&b, "  %q -> %q;\n", "stage:"+st.Name, "stream:"+out)
		}
		if st.SidecarOf != "" && st.SidecarOf != AppSidecar {
			fmt.Fprintf(&b, "  %q -> %q [style=dashed, label=\"sidecar of\"];\n", "stage:"+st.Name, "stage:"+st.SidecarOf)
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func mermaidID(prefix, name string) string {
	return prefix + "_" + strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, name)
}

func renderMermaid(w io.Writer, t *Topology) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for _, s := range usedStreams(t) {
		fmt.Fprintf(&b, "  %s[(\"%s<br/>%s\")]\n", mermaidID("stream", s.Name), s.Name, strings.Join(s.Subjects, " "))
	}
	for _, st := range t.Stages {
		fmt.Fprintf(&b, "  %s(\"%s<br/>%s · %s\")\n", mermaidID("stage", st.Name), st.Name, st.Kind, st.Deploy)
	}
	for _, st := range t.Stages {
		for _, in := range st.Inputs {
			fmt.Fprintf(&b, "  %s --> %s\n", mermaidID("stream", in), mermaidID("stage", st.Name))
		}
		for _, out := range st.Outputs {
			fmt.Fprintf(&b, "  %s --> %s\n", mermaidID("stage", st.Name), mermaidID("stream", out))
		}
		if st.SidecarOf != "" && st.SidecarOf != AppSidecar {
			fmt.Fprintf(&b, "  %s -. sidecar of .-> %s\n", mermaidID("stage", st.Name), mermaidID("stage", st.SidecarOf))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
