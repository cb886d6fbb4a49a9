package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/streams/topology"
)

func newTopologyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Validate and show topologies (stages connected by streams)",
	}
	cmd.AddCommand(newTopologyValidateCmd(), newTopologyShowCmd())
	for _, c := range topologyCommands {
		cmd.AddCommand(c())
	}
	return cmd
}

// topologyCommands are further topology subcommands (values), added by
// their files.
var topologyCommands []func() *cobra.Command

func newTopologyValidateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "validate -f FILE",
		Short:   "Check a topology and report every problem with file:line",
		Example: `  weft topology validate -f examples/topologies/hybrid.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("-f FILE is required")}
			}
			t, err := topology.Load(file, registry())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: topology %q is valid: %d streams, %d stages\n", file, t.Metadata.Name, len(t.Streams), len(t.Stages))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file")
	return cmd
}

func newTopologyShowCmd() *cobra.Command {
	var file, format string
	cmd := &cobra.Command{
		Use:   "show [-f FILE] [--format text|json|dot|mermaid]",
		Short: "Show a topology as a table, JSON, a Graphviz graph or a Mermaid diagram",
		Example: `  weft topology show
  weft topology show -f hybrid.yaml --format dot | dot -Tsvg > hybrid.svg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopology(file, registry())
			if err != nil {
				return err
			}
			if err := topology.Render(cmd.OutOrStdout(), t, format); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (default: the built-in local topology)")
	cmd.Flags().StringVar(&format, "format", "text", "text, json, dot or mermaid")
	return cmd
}
