package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/weftobs/weft/streams/deadletter"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/schema"
)

func init() { extraCommands = append(extraCommands, newDLQCmd) }

func newDLQCmd() *cobra.Command {
	var nf natsFlags
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect dead letters in the DLQ stream and send them back once fixed",
		Long: `Stages put a message they cannot process in the DLQ stream, on
weft.dlq.<stage>, with the reason and where it came from in headers
(Weft-Dlq-Reason, Weft-Dlq-Stream, Weft-Dlq-Subject, Weft-Dlq-Seq).
ls counts them, show lists them, redrive republishes them to their
original subject once the cause is fixed.`,
	}
	nf.registerOperator(cmd.PersistentFlags())

	ls := &cobra.Command{
		Use:   "ls",
		Short: "Count dead letters per stage and reason, with the oldest and newest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDLQ(cmd.Context(), nf, func(ctx context.Context, js jetstream.JetStream) error {
				letters, err := deadletter.Scan(ctx, js, deadletter.Filter{})
				if err != nil {
					return streamError(schema.StreamDLQ, err)
				}
				return writeDLQGroups(cmd.OutOrStdout(), deadletter.Groups(letters))
			})
		},
	}

	var show struct {
		stage string
		limit int
	}
	showCmd := &cobra.Command{
		Use:   "show [--stage S] [--limit N]",
		Short: "List dead letters, oldest first: reason, origin, time and what the payload holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if show.limit < 0 {
				return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", show.limit)}
			}
			return withDLQ(cmd.Context(), nf, func(ctx context.Context, js jetstream.JetStream) error {
				letters, err := deadletter.Scan(ctx, js, deadletter.Filter{Stage: show.stage})
				if err != nil {
					return streamError(schema.StreamDLQ, err)
				}
				return writeDLQLetters(cmd.OutOrStdout(), letters, show.limit)
			})
		},
	}
	showCmd.Flags().StringVar(&show.stage, "stage", "", "only this stage's dead letters")
	showCmd.Flags().IntVar(&show.limit, "limit", 20, "show at most this many (0: all)")

	var rd struct {
		stage, reason string
		dryRun        bool
	}
	redrive := &cobra.Command{
		Use:   "redrive [--stage S] [--reason SUBSTR] [--dry-run]",
		Short: "Republish dead letters to their original subject and remove them from the DLQ",
		Long: `Redrive republishes each selected dead letter to the subject and stream it
came from, and removes it from the DLQ only once that publish is acked. Each
publish carries a Nats-Msg-Id derived from the letter's DLQ sequence, so a
redrive that is interrupted and run again (within the stream's duplicates
window) does not store a letter twice. A letter that fails again, after
retries, goes back to the DLQ with the new reason. With --dry-run it only
lists what it would do.`,
		Example: `  weft dlq redrive --stage graph --dry-run
  weft dlq redrive --stage graph --reason "store unavailable"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			nf.Name = "weft dlq"
			nc, js, err := natsconn.Connect(ctx, nf.Options, slog.Default())
			if err != nil {
				return err
			}
			defer nc.Close()
			letters, err := deadletter.Scan(ctx, js, deadletter.Filter{Stage: rd.stage, Reason: rd.reason})
			if err != nil {
				return streamError(schema.StreamDLQ, err)
			}
			w := cmd.OutOrStdout()
			if len(letters) == 0 {
				fmt.Fprintln(w, "no dead letters match")
				return nil
			}
			if rd.dryRun {
				for _, l := range letters {
					fmt.Fprintf(w, "would redrive DLQ %d (stage %s) to %s in %s: %s\n", l.Seq, l.Stage, l.Subject, l.Stream, l.Reason)
				}
				fmt.Fprintf(w, "dry run: %d dead letters would be redriven; nothing changed\n", len(letters))
				return nil
			}
			out, err := deadletter.Redrive(ctx, js, letters, deadletter.RedriveOptions{NATS: nf.Options, Logger: slog.Default()})
			ok, failed := 0, 0
			for _, o := range out {
				switch {
				case o.Err == nil:
					ok++
					fmt.Fprintf(w, "redriven DLQ %d (stage %s) to %s in %s\n", o.Letter.Seq, o.Letter.Stage, o.Letter.Subject, o.Letter.Stream)
				case o.Requeued:
					failed++
					fmt.Fprintf(w, "failed DLQ %d (stage %s), back in the DLQ: %v\n", o.Letter.Seq, o.Letter.Stage, o.Err)
				default:
					failed++
					fmt.Fprintf(w, "failed DLQ %d (stage %s), left in the DLQ: %v\n", o.Letter.Seq, o.Letter.Stage, o.Err)
				}
			}
			fmt.Fprintf(w, "redriven %d of %d dead letters\n", ok, len(letters))
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d dead letters not redriven", failed, len(letters))
			}
			return nil
		},
	}
	redrive.Flags().StringVar(&rd.stage, "stage", "", "only this stage's dead letters")
	redrive.Flags().StringVar(&rd.reason, "reason", "", "only dead letters whose reason contains this")
	redrive.Flags().BoolVar(&rd.dryRun, "dry-run", false, "list what would be redriven; change nothing")

	cmd.AddCommand(ls, showCmd, redrive)
	return cmd
}

// withDLQ is withJS without its 10 s bound: a DLQ can be long to read.
func withDLQ(ctx context.Context, nf natsFlags, f func(context.Context, jetstream.JetStream) error) error {
	nf.Name = "weft dlq"
	nc, js, err := natsconn.Connect(ctx, nf.Options, slog.Default())
	if err != nil {
		return err
	}
	defer nc.Close()
	return f(ctx, js)
}

func writeDLQGroups(w io.Writer, groups []deadletter.Group) error {
	if len(groups) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tREASON\tCOUNT\tOLDEST\tNEWEST")
	for _, g := range groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.Stage, g.Reason, g.Count, g.Oldest.UTC().Format(time.RFC3339), g.Newest.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func writeDLQLetters(w io.Writer, letters []deadletter.Letter, limit int) error {
	if len(letters) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	shown := letters
	if limit > 0 && len(shown) > limit {
		shown = shown[:limit]
	}
	for i, l := range shown {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "DLQ %d\t%s\tstage %s\n", l.Seq, l.Time.UTC().Format(time.RFC3339), l.Stage)
		fmt.Fprintf(tw, "  reason\t%s\n", l.Reason)
		fmt.Fprintf(tw, "  from\t%s sequence %d, subject %s\n", l.Stream, l.OrigSeq, l.Subject)
		fmt.Fprintf(tw, "  payload\t%s\n", deadletter.Summary(l))
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if n := len(letters) - len(shown); n > 0 {
		fmt.Fprintf(w, "\n… and %d more (--limit 0 shows all)\n", n)
	}
	return nil
}
