package values

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// Build returns a values file for the chart: userValues (a values file as
// for `helm install -f`; empty for the chart's defaults) with the keys
// topology and topologyFile replaced by topologyFile holding topologyYAML
// verbatim, so the chart's ConfigMap carries the user's text, comments and
// line numbers included, and weft's messages point at the user's lines.
// The user's keys keep their order and comments. Build does not validate
// the topology (the caller's registry does) nor the values against the
// chart's schema (Helm does, at install).
func Build(topologyYAML, userValues []byte) ([]byte, error) {
	if len(bytes.TrimSpace(topologyYAML)) == 0 {
		return nil, fmt.Errorf("topology: empty document")
	}
	// Decoding into a map first refuses what Helm would: duplicate keys,
	// a document that is no mapping, more than one document.
	var check map[string]any
	if err := decodeOne(userValues, &check); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	var doc yaml.Node
	if err := decodeOne(userValues, &doc); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	root := &yaml.Node{Kind: yaml.MappingNode}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		// A null document (only comments, or "~") is no values at all.
		if root.Kind != yaml.ScalarNode || root.Tag != "!!null" {
			return nil, fmt.Errorf("values: line %d: the document is no mapping of keys", root.Line)
		}
		root = &yaml.Node{Kind: yaml.MappingNode, HeadComment: root.HeadComment}
	}
	root.Style = 0 // a flow mapping ({…}) would put the topology on one line
	kept := root.Content[:0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "topology", "topologyFile":
			continue
		}
		kept = append(kept, root.Content[i], root.Content[i+1])
	}
	text := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(topologyYAML), Style: yaml.LiteralStyle}
	root.Content = append(kept,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "topologyFile",
			HeadComment: "The topology, verbatim (weft topology values)."},
		text,
	)
	out, err := encode(root)
	if err != nil {
		return nil, err
	}
	// A literal block keeps the user's lines readable, but YAML cannot
	// carry every text in one (leading blank lines, some whitespace); such
	// a text goes double-quoted, which carries any.
	var back struct {
		TopologyFile *string `yaml:"topologyFile"`
	}
	if err := yaml.Unmarshal(out, &back); err == nil && back.TopologyFile != nil && *back.TopologyFile == text.Value {
		return out, nil
	}
	text.Style = yaml.DoubleQuotedStyle
	return encode(root)
}

// encode writes n as a YAML document indented by two spaces.
func encode(n *yaml.Node) ([]byte, error) {
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode values: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode values: %w", err)
	}
	return out.Bytes(), nil
}

// decodeOne decodes the only YAML document in data into v; no document
// leaves v as it is.
func decodeOne(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("line %d: a second document; a values file holds one", extra.Line)
}
