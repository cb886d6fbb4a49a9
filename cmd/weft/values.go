package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/charts/values"
	"github.com/weftobs/weft/examples/topologies"
)

func init() {
	topologyCommands = append(topologyCommands, newTopologyValuesCmd)
}

// newTopologyValuesCmd prints chart values rather than rendering the chart:
// rendering needs the Helm SDK, whose Kubernetes scheme would be
// initialised in every weft process (see charts/render's doc).
func newTopologyValuesCmd() *cobra.Command {
	var file, valuesFile string
	cmd := &cobra.Command{
		Use:   "values [-f FILE] [--values FILE]",
		Short: "Print the Helm chart values that install a topology",
		Long: `Values checks a topology with this binary's kinds (every problem with
file:line) and prints a values file for the weft Helm chart: the values
given with --values, with the topology verbatim under topologyFile. Give it
to Helm: "helm template" prints the Kubernetes objects, "helm install"
creates them. For a stage deployed as "sidecar" with "sidecarOf: app", the
container to add to your own pods is in the ConfigMap <release>-sidecars
(templates/sidecars-configmap.yaml): a chart cannot inject into other
charts' pods.`,
		Example: `  weft topology values -f my-topology.yaml > values.yaml
  helm template weft charts/weft -n weft -f values.yaml
  helm template weft charts/weft -n weft -f values.yaml --show-only templates/sidecars-configmap.yaml
  helm install weft charts/weft -n weft -f values.yaml`,
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
				return fmt.Errorf("read topology: %w", err)
			}
			if _, err := loadTopology(file, registry()); err != nil {
				return err
			}
			var user []byte
			if valuesFile != "" {
				if user, err = os.ReadFile(valuesFile); err != nil {
					return fmt.Errorf("read values: %w", err)
				}
			}
			out, err := values.Build(data, user)
			if err != nil && valuesFile != "" {
				return fmt.Errorf("%s: %w", valuesFile, err)
			}
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (default: the built-in local topology)")
	cmd.Flags().StringVar(&valuesFile, "values", "", "chart values file to add the topology to, as for helm -f")
	return cmd
}
