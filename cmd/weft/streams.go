package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/topology"
)

func newStreamsCmd() *cobra.Command {
	var nf natsFlags
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "List and inspect weft's JetStream streams and their consumers",
	}
	nf.registerOperator(cmd.PersistentFlags())
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List streams with their size",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withJS(cmd.Context(), nf, func(ctx context.Context, js jetstream.JetStream) error {
				var infos []*jetstream.StreamInfo
				l := js.ListStreams(ctx)
				for info := range l.Info() {
					infos = append(infos, info)
				}
				if err := l.Err(); err != nil {
					return fmt.Errorf("list streams: %w", err)
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), infos)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSUBJECTS\tMESSAGES\tBYTES\tFIRST\tLAST\tCONSUMERS\tSTORAGE\tREPLICAS")
				for _, i := range infos {
					fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%d\t%d\t%d\t%s\t%d\n", i.Config.Name, i.Config.Subjects, i.State.Msgs, i.State.Bytes,
						i.State.FirstSeq, i.State.LastSeq, i.State.Consumers, i.Config.Storage, i.Config.Replicas)
				}
				return tw.Flush()
			})
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var infoJSON bool
	info := &cobra.Command{
		Use:   "info NAME",
		Short: "Show a stream's definition, state and consumers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJS(cmd.Context(), nf, func(ctx context.Context, js jetstream.JetStream) error {
				st, err := js.Stream(ctx, args[0])
				if err != nil {
					return streamError(args[0], fmt.Errorf("stream %s: %w", args[0], err))
				}
				si, err := st.Info(ctx)
				if err != nil {
					return fmt.Errorf("stream %s: %w", args[0], err)
				}
				var consumers []*jetstream.ConsumerInfo
				cl := st.ListConsumers(ctx)
				for ci := range cl.Info() {
					consumers = append(consumers, ci)
				}
				if err := cl.Err(); err != nil {
					return fmt.Errorf("stream %s: list consumers: %w", args[0], err)
				}
				if infoJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]any{"stream": si, "consumers": consumers})
				}
				return writeStreamInfo(cmd.OutOrStdout(), si, consumers)
			})
		},
	}
	info.Flags().BoolVar(&infoJSON, "json", false, "print JSON")
	var topoFile string
	diff := &cobra.Command{
		Use:   "diff -f TOPOLOGY",
		Short: "Show, field by field, how the live streams differ from a topology's (changes nothing)",
		Long: `Compare every stream a topology declares with the live one, as the next
"weft up" or "weft run" would before applying the topology (or keeping the
live stream, with the stream's onDrift: keep). Changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topoFile == "" {
				return usageError{errors.New("-f TOPOLOGY is required")}
			}
			topo, err := topology.Load(topoFile, registry())
			if err != nil {
				return err
			}
			return withJS(cmd.Context(), nf, func(ctx context.Context, js jetstream.JetStream) error {
				o := provision.Options{}
				if nc := js.Conn(); nc.ConnectedClusterName() == "" {
					o.MaxReplicas = 1 // as provisioning caps them on a lone server
				}
				drift, missing, err := provision.DiffStreams(ctx, js, topo, o)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				for _, d := range drift {
					fmt.Fprintln(w, d)
				}
				for _, m := range missing {
					fmt.Fprintf(w, "stream %s: not created yet\n", m)
				}
				if len(drift) == 0 && len(missing) == 0 {
					fmt.Fprintf(w, "the live streams are as %s declares them\n", topo.File)
				}
				return nil
			})
		},
	}
	diff.Flags().StringVarP(&topoFile, "file", "f", "", "topology file")
	cmd.AddCommand(ls, info, diff)
	return cmd
}

func writeStreamInfo(w io.Writer, si *jetstream.StreamInfo, consumers []*jetstream.ConsumerInfo) error {
	c, s := si.Config, si.State
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "stream\t%s\n", c.Name)
	fmt.Fprintf(tw, "subjects\t%v\n", c.Subjects)
	fmt.Fprintf(tw, "storage\t%s, %d replica(s)\n", c.Storage, c.Replicas)
	fmt.Fprintf(tw, "limits\tmax age %s, max bytes %d, max msgs %d, duplicates window %s\n", c.MaxAge, c.MaxBytes, c.MaxMsgs, c.Duplicates)
	fmt.Fprintf(tw, "messages\t%d (%d bytes), sequences %d…%d\n", s.Msgs, s.Bytes, s.FirstSeq, s.LastSeq)
	if !s.FirstTime.IsZero() {
		fmt.Fprintf(tw, "time\t%s … %s\n", s.FirstTime.Format(time.RFC3339), s.LastTime.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tFILTER\tDELIVERED\tACK FLOOR\tPENDING\tACK PENDING\tREDELIVERED")
	for _, ci := range consumers {
		filter := ci.Config.FilterSubject
		if len(ci.Config.FilterSubjects) > 0 {
			filter = fmt.Sprint(ci.Config.FilterSubjects)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", ci.Name, filter, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// streamError is err, about stream name, as users read it: a stream that
// does not exist says so and where to look, whichever command asked.
func streamError(name string, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: not found (weft streams ls lists them)", name)
	}
	return err
}

// withJS connects, runs f, and closes the connection.
func withJS(ctx context.Context, nf natsFlags, f func(context.Context, jetstream.JetStream) error) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nf.Name = "weft cli"
	nc, js, err := natsconn.Connect(cctx, nf.Options, slog.Default())
	if err != nil {
		return err
	}
	defer func(nc *nats.Conn) { nc.Close() }(nc)
	return f(cctx, js)
}
