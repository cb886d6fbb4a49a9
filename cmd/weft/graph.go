package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
)

func newGraphCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "graph", Short: "Work with the call graph"}
	var format, addr, dataDir, stageName string
	var neo neo4jstore.Config
	exp := &cobra.Command{
		Use:   "export",
		Short: "Print the graph as JSON, Cypher (loads into an empty Neo4j with cypher-shell) or DOT",
		Long: `Print the graph as JSON, Cypher (loads into an empty Neo4j with cypher-shell) or DOT.

It is read from, in this order: the embedded store saved in --data-dir; Neo4j,
when --neo4j-uri (or WEFT_NEO4J_URI) is set and --addr is not given; a running
weft's /api/v1/graph at --addr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var g *graph.Graph
			switch {
			case dataDir != "":
				// A weft data dir holds each stage's state under
				// stages/<name>; a stage dir is taken as is.
				dir := dataDir
				if _, err := os.Stat(filepath.Join(dataDir, "stages", stageName)); err == nil {
					dir = filepath.Join(dataDir, "stages", stageName)
				}
				st, err := memstore.Load(dir)
				if err != nil {
					return err
				}
				if g, err = st.Graph(cmd.Context()); err != nil {
					return err
				}
			case neo.URI != "" && !cmd.Flags().Changed("addr"):
				st, err := neo4jstore.Open(cmd.Context(), neo)
				if err != nil {
					return err
				}
				defer st.Close(context.WithoutCancel(cmd.Context()))
				if g, err = st.Graph(cmd.Context()); err != nil {
					return fmt.Errorf("read the graph from Neo4j %s: %w", neo.URI, err)
				}
			default:
				url := addr
				if !strings.Contains(url, "://") {
					url = "http://" + url
				}
				req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, url+"/api/v1/graph", nil)
				if err != nil {
					return err
				}
				resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
				if err != nil {
					return fmt.Errorf("get the graph from %s (is `weft up` running? or pass --data-dir): %w", addr, err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("get the graph from %s: %s", addr, resp.Status)
				}
				g = &graph.Graph{}
				if err := json.NewDecoder(resp.Body).Decode(g); err != nil {
					return fmt.Errorf("decode the graph from %s: %w", addr, err)
				}
			}
			return export.Write(cmd.OutOrStdout(), g, format)
		},
	}
	exp.Flags().StringVar(&format, "format", "json", "json, cypher or dot")
	exp.Flags().StringVar(&stageName, "stage", "graph", "with --data-dir: the graph stage whose store to read")
	exp.Flags().StringVar(&addr, "addr", "127.0.0.1:7680", "HTTP address of a running weft")
	exp.Flags().StringVar(&dataDir, "data-dir", "", "read the graph saved in this stage data dir (holding graph.json) instead")
	neo4jFlags(exp.Flags(), &neo)
	cmd.AddCommand(exp)
	return cmd
}
