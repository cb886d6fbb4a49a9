package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/export"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/correlator/graph/neo4jstore"
	"github.com/weftobs/weft/correlator/graph/query"
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
			g, err := readGraph(cmd, dataDir, stageName, neo, addr)
			if err != nil {
				return err
			}
			return export.Write(cmd.OutOrStdout(), g, format)
		},
	}
	exp.Flags().StringVar(&format, "format", "json", "json, cypher or dot")
	exp.Flags().StringVar(&stageName, "stage", "graph", "with --data-dir: the graph stage whose store to read")
	exp.Flags().StringVar(&addr, "addr", "127.0.0.1:7680", "HTTP address of a running weft")
	exp.Flags().StringVar(&dataDir, "data-dir", "", "read the graph saved in this stage data dir (holding graph.json) instead")
	neo4jFlags(exp.Flags(), &neo)
	cmd.AddCommand(exp, newQueryCmd())
	return cmd
}

func newQueryCmd() *cobra.Command {
	var addr, dataDir, stageName string
	var asJSON bool
	var neo neo4jstore.Config
	var names []string
	for _, q := range query.All {
		names = append(names, fmt.Sprintf("  %-13s %-9s %s", q.Name, q.Arg, q.Description))
	}
	cmd := &cobra.Command{
		Use:   "query NAME [ARG]",
		Short: "Answer a named question about the graph, the same from the embedded store or Neo4j",
		Long: `Answer a named question about the graph:

` + strings.Join(names, "\n") + `

Neo4j answers with the query's Cypher (--neo4j-uri or WEFT_NEO4J_URI, when
--addr is not given); otherwise the graph is read from --data-dir or a running
weft at --addr and answered the same way.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := query.Find(args[0])
			if q == nil {
				var known []string
				for _, q := range query.All {
					known = append(known, q.Name)
				}
				return fmt.Errorf("no query named %q: want one of %s", args[0], strings.Join(known, ", "))
			}
			arg, err := q.Parse(args[1:])
			if err != nil {
				return err
			}
			var res *query.Result
			if neo.URI != "" && dataDir == "" && !cmd.Flags().Changed("addr") {
				st, err := neo4jstore.Open(cmd.Context(), neo)
				if err != nil {
					return err
				}
				defer st.Close(context.WithoutCancel(cmd.Context()))
				if res, err = st.Answer(cmd.Context(), q, arg); err != nil {
					return err
				}
			} else {
				g, err := readGraph(cmd, dataDir, stageName, neo4jstore.Config{}, addr)
				if err != nil {
					return err
				}
				res = q.Embedded(g, arg)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, strings.ToUpper(strings.Join(res.Columns, "\t")))
			for _, r := range res.Rows {
				cells := make([]string, len(r))
				for i, v := range r {
					cells[i] = fmt.Sprint(v)
				}
				fmt.Fprintln(w, strings.Join(cells, "\t"))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"columns":[…],"rows":[[…]]}`)
	cmd.Flags().StringVar(&stageName, "stage", "graph", "with --data-dir: the graph stage whose store to read")
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7680", "HTTP address of a running weft")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "read the graph saved in this stage data dir (holding graph.json) instead")
	neo4jFlags(cmd.Flags(), &neo)
	return cmd
}

// readGraph reads the whole graph from, in this order: the embedded store
// saved in dataDir; Neo4j, when its URI is set and --addr was not given;
// a running weft's /api/v1/graph at addr.
func readGraph(cmd *cobra.Command, dataDir, stageName string, neo neo4jstore.Config, addr string) (*graph.Graph, error) {
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
			return nil, err
		}
		if g, err = st.Graph(cmd.Context()); err != nil {
			return nil, err
		}
	case neo.URI != "" && !cmd.Flags().Changed("addr"):
		st, err := neo4jstore.Open(cmd.Context(), neo)
		if err != nil {
			return nil, err
		}
		defer st.Close(context.WithoutCancel(cmd.Context()))
		if g, err = st.Graph(cmd.Context()); err != nil {
			return nil, fmt.Errorf("read the graph from Neo4j %s: %w", neo.URI, err)
		}
	default:
		url := addr
		if !strings.Contains(url, "://") {
			url = "http://" + url
		}
		req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, url+"/api/v1/graph", nil)
		if err != nil {
			return nil, err
		}
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return nil, fmt.Errorf("get the graph from %s (is `weft up` running? or pass --data-dir): %w", addr, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("get the graph from %s: %s", addr, resp.Status)
		}
		g = &graph.Graph{}
		if err := json.NewDecoder(resp.Body).Decode(g); err != nil {
			return nil, fmt.Errorf("decode the graph from %s: %w", addr, err)
		}
	}
	return g, nil
}
