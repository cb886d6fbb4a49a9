package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/testenv/storebench"
)

func init() { benchCommands = append(benchCommands, newBenchStorageCmd) }

func newBenchStorageCmd() *cobra.Command {
	var o storebench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "storage [--events N] [--json]",
		Short: "Bytes per event and per call as JetStream stores them (demo traffic), uncompressed and whole calls against weft's defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := storebench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d events → %d calls (%.3f per event); %d events, %d calls per message; file storage\n",
				r.Events, r.Calls, r.CallsPerEvent, r.EventsPerBatch, r.CallsPerBatch)
			fmt.Fprintf(w, "  %-30s %22s %22s\n", "", "EVENTS bytes/event", "CALLS bytes/call")
			fmt.Fprintf(w, "  %-30s %10s %11s %10s %11s\n", "variant", "stored", "disk", "stored", "disk")
			for _, v := range r.Variants {
				fmt.Fprintf(w, "  %-30s %10.1f %11.1f %10.1f %11.1f\n", v.Name,
					v.Events.StoredPerItem, v.Events.DiskPerItem, v.Calls.StoredPerItem, v.Calls.DiskPerItem)
			}
			base, def := r.Variants[0], r.Variants[len(r.Variants)-1]
			fmt.Fprintf(w, "  default ÷ baseline: EVENTS stored %.3f×, disk %.3f×; CALLS stored %.3f×, disk %.3f×\n",
				def.Events.StoredPerItem/base.Events.StoredPerItem, def.Events.DiskPerItem/base.Events.DiskPerItem,
				def.Calls.StoredPerItem/base.Calls.StoredPerItem, def.Calls.DiskPerItem/base.Calls.DiskPerItem)
			fmt.Fprintln(w, "  (stored: what maxBytes counts; disk: the block files, S2 acting on full blocks)")
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Events, "events", 400_000, "events per variant")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
