package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftobs/weft/correlator/graph/neo4jstore"
)

func newMigrateCmd() *cobra.Command {
	var cfg neo4jstore.Config
	var lockTTL time.Duration
	cmd := &cobra.Command{
		Use:   "migrate status|up",
		Short: "Show or apply the Neo4j schema migrations (embedded in this binary)",
	}
	neo4jFlags(cmd.PersistentFlags(), &cfg)
	open := func(ctx context.Context) (*neo4jstore.Store, error) { return neo4jstore.Open(ctx, cfg) }
	cmd.AddCommand(&cobra.Command{
		Use: "status", Short: "List applied and pending migrations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close(context.WithoutCancel(cmd.Context()))
			s, err := st.MigrationStatus(cmd.Context())
			if s != nil {
				for _, a := range s.Applied {
					fmt.Fprintf(cmd.OutOrStdout(), "applied  V%03d %-30s %s  %s\n", a.Version, a.Description, a.Checksum[:min(12, len(a.Checksum))], a.AppliedAt)
				}
				for _, m := range s.Pending {
					fmt.Fprintf(cmd.OutOrStdout(), "pending  %-35s %s\n", m.Name(), m.Checksum[:12])
				}
			}
			return err
		},
	})
	up := &cobra.Command{
		Use: "up", Short: "Apply the pending migrations, under a lock", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close(context.WithoutCancel(cmd.Context()))
			host, _ := os.Hostname()
			done, err := st.Migrate(cmd.Context(), fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano()), lockTTL)
			for _, m := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "applied  %s\n", m.Name())
			}
			if err == nil && len(done) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "up to date")
			}
			return err
		},
	}
	up.Flags().DurationVar(&lockTTL, "lock-ttl", 10*time.Minute, "how long a lock left by a crashed run blocks others")
	cmd.AddCommand(up)
	return cmd
}

// neo4jFlags are the flags that say where Neo4j is, with their
// environment defaults.
func neo4jFlags(fs *pflag.FlagSet, cfg *neo4jstore.Config) {
	fs.StringVar(&cfg.URI, "neo4j-uri", os.Getenv("WEFT_NEO4J_URI"), "Neo4j URI: bolt://, neo4j://, neo4j+s:// (TLS) [$WEFT_NEO4J_URI]")
	fs.StringVar(&cfg.User, "neo4j-user", envOr("WEFT_NEO4J_USER", "neo4j"), "Neo4j user [$WEFT_NEO4J_USER]")
	fs.StringVar(&cfg.Password, "neo4j-password", os.Getenv("WEFT_NEO4J_PASSWORD"), "Neo4j password [$WEFT_NEO4J_PASSWORD]")
	fs.StringVar(&cfg.Database, "neo4j-database", "neo4j", "Neo4j database")
}
