package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/charts/render"
	"github.com/weftobs/weft/examples/topologies"
)

func init() {
	topologyCommands = append(topologyCommands, newTopologyRenderCmd)
}

func newTopologyRenderCmd() *cobra.Command {
	var file, sidecar, valuesFile, release, namespace string
	cmd := &cobra.Command{
		Use:   "render [-f FILE] [--sidecar STAGE] [--values FILE]",
		Short: "Render a topology into Kubernetes objects with the embedded Helm chart",
		Long: `Render prints the Kubernetes objects the chart makes of a topology, as
"helm template" would. With --sidecar STAGE it prints only the container
(and shared volume) to add to your own pods for a stage deployed as
"sidecar" with "sidecarOf: app": a chart cannot inject into other charts'
pods.`,
		Example: `  weft topology render -f examples/topologies/hybrid.yaml
  weft topology render -f examples/topologies/sidecar.yaml --sidecar collector`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var data []byte
			var err error
			if file == "" {
				data, err = topologies.FS.ReadFile("local.yaml")
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			// The binary's own validation first: file:line messages.
			if _, err := loadTopology(file, registry()); err != nil {
				return err
			}
			opts := render.Options{ReleaseName: release, Namespace: namespace}
			if valuesFile != "" {
				raw, err := os.ReadFile(valuesFile)
				if err != nil {
					return err
				}
				if opts.Values, err = render.ParseValues(raw); err != nil {
					return fmt.Errorf("%s: %w", valuesFile, err)
				}
			}
			var out string
			if sidecar != "" {
				out, err = render.RenderSidecar(data, sidecar, opts)
			} else {
				out, err = render.Render(data, opts)
			}
			if err != nil {
				return errors.New(err.Error())
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), out)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (default: the built-in local topology)")
	cmd.Flags().StringVar(&sidecar, "sidecar", "", "print only the sidecar container of this stage (deploy: sidecar, sidecarOf: app)")
	cmd.Flags().StringVar(&valuesFile, "values", "", "chart values file, as for helm -f")
	cmd.Flags().StringVar(&release, "release", "weft", "release name")
	cmd.Flags().StringVar(&namespace, "namespace", "weft", "namespace")
	return cmd
}
