package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/streams/bench"
)

// benchCommands are further bench subcommands (collector, …) added by
// their files.
var benchCommands []func() *cobra.Command

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure capacity on this node (each figure with its baseline from the same run)",
	}
	cmd.AddCommand(newBenchStreamsCmd())
	for _, c := range benchCommands {
		cmd.AddCommand(c())
	}
	return cmd
}

func newBenchStreamsCmd() *cobra.Command {
	var o bench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "streams [--events N] [--json]",
		Short: "Batched publish and consume through an embedded file-backed JetStream, against one-event-per-message publish",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d events of %.0f bytes, %d per batch, file storage, GOMAXPROCS %d\n", r.Events, r.EventBytes, r.BatchEvents, r.GOMAXPROCS)
			fmt.Fprintf(w, "  batched publish    %12.0f events/s\n", r.PublishEventsPerSec)
			fmt.Fprintf(w, "  consume + ack      %12.0f events/s\n", r.ConsumeEventsPerSec)
			fmt.Fprintf(w, "  baseline publish   %12.0f events/s (one event per message, JetStream async publish)\n", r.BaselinePublishEventsPerSec)
			fmt.Fprintf(w, "  speedup            %12.1f×\n", r.PublishSpeedupOverBaseline)
			fmt.Fprintf(w, "  publisher buffer   %12d bytes peak (bound %d bytes)\n", r.PublisherPeakBufferedBytes, r.PublisherMaxBufferedBytes)
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Events, "events", 1_000_000, "events per phase")
	cmd.Flags().IntVar(&o.BatchEvents, "batch", 1024, "events per message for the batched publisher")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
