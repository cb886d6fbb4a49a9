// Command weft is the one binary of the weft pipeline: it runs topologies
// (weft up, weft run), inspects them and their streams, replays streams,
// and measures capacity (weft bench). It is the one place that links every
// stage kind in.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "weft:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(1)
	}
}

// usageError is an error in how weft was called (exit 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

var logLevel = new(slog.LevelVar)

func newRootCmd() *cobra.Command {
	var level string
	root := &cobra.Command{
		Use:   "weft",
		Short: "weft sees how workloads talk to each other: eBPF events → NATS JetStream → a graph and OTLP",
		Long: `weft captures kernel events (processes, TCP connections, unix-socket calls)
with eBPF, publishes them to NATS JetStream streams, correlates them into
calls between pods, containers and processes, and builds a graph (embedded or
Neo4j) and OpenTelemetry data from them. Streams are the system of record:
anything built from them can be rebuilt by replay.

Start here: weft up`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := logLevel.UnmarshalText([]byte(level)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newUpCmd(), newRunCmd(), newTopologyCmd(), newStreamsCmd(), newReplayCmd(),
		newBenchCmd(), newVersionCmd(), newMigrateCmd(), newGraphCmd(),
	)
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are added by the files of optional subsystems (migrate,
// graph) in their init functions.
var extraCommands []func() *cobra.Command

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print weft's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "weft", version)
		},
	}
}
