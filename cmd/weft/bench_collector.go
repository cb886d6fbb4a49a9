package main

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/collectors/bench"
)

func init() { benchCommands = append(benchCommands, newBenchCollectorCmd) }

func newBenchCollectorCmd() *cobra.Command {
	var o bench.Options
	var asJSON, verbose bool
	cmd := &cobra.Command{
		Use:   "collector [--json]",
		Short: "The eBPF collector: user-space path on replayed records, and a loopback connection storm with and without it (needs root for the storm)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The storm runs in a child: this same command, told so by the
			// environment, so its CPU is not counted as the collector's.
			bench.ChildMain()
			if verbose {
				o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			}
			self := append([]string{}, os.Args[1:]...)
			r, err := bench.Run(cmd.Context(), o, bench.SelfStorm(self...))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "collector on %d CPUs, kernel %s\n", r.CPUs, r.Kernel)
			fmt.Fprintf(w, "  user-space path    %12.0f events/s (decode → enrich → encode → publish, %s records)\n", r.UserspaceEventsPerSec, r.RecordsSource)
			fmt.Fprintf(w, "  baseline           %12.0f events/s (encode → publish of decoded events)\n", r.UserspaceBaselineEventsPerSec)
			if r.StormSkipped != "" {
				fmt.Fprintf(w, "  storm skipped: %s\n", r.StormSkipped)
				return nil
			}
			fmt.Fprintf(w, "  storm              %12.0f connections/s without, %.0f with the collector (%d threads)\n", r.StormConnectionsPerSec, r.StormConnectionsPerSecCollector, r.StormWorkers)
			fmt.Fprintf(w, "  overhead           %12.3f× wall time (with ÷ without, same run; median of %d rounds, 95%% CI %.3f–%.3f)\n",
				r.StormOverheadRatio, len(r.StormRoundRatios), r.StormOverheadRatioCI95[0], r.StormOverheadRatioCI95[1])
			fmt.Fprintf(w, "  events             %12.0f events/s, %d lost\n", r.StormEventsPerSec, r.LostEvents)
			fmt.Fprintf(w, "  CPU                %12.4f cores per 10k events/s\n", r.CPUCoresPer10kEvents)
			fmt.Fprintf(w, "  RSS                %12d bytes peak (anonymous %d, ring buffer %d, the rest binary text)\n", r.RSSBytes, r.RSSAnonBytes, r.RSSRingBytes)
			hooks := slices.Sorted(maps.Keys(r.HookNsPerRun))
			for _, h := range hooks {
				fmt.Fprintf(w, "  hook %-17s %8.0f ns per run (kernel BPF statistics, one more segment)\n", h, r.HookNsPerRun[h])
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Events, "events", 1_000_000, "records replayed through the user-space path")
	cmd.Flags().IntVar(&o.Conns, "conns", 5_000, "connections per storm segment (a round runs one without and one with the collector)")
	cmd.Flags().IntVar(&o.Workers, "workers", 0, "storm threads, each driving both ends of its connections (0: one per CPU but one, which is left to the collector)")
	cmd.Flags().IntVar(&o.Rounds, "rounds", 41, "storm rounds (each: a segment without and one with the collector's hooks attached, back to back, in alternating order)")
	cmd.Flags().StringSliceVar(&o.Probes, "probes", nil, "probes the storm's collector attaches (default all: process,tcp,unix)")
	cmd.Flags().BoolVar(&o.SkipStorm, "skip-storm", false, "user-space path only")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log progress to stderr")
	return cmd
}
