package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/weftobs/weft/collectors/synthetic"
	"github.com/weftobs/weft/correlator/graphstage"
	"github.com/weftobs/weft/examples/topologies"
	"github.com/weftobs/weft/exporters/otlp"
	"github.com/weftobs/weft/streams/embedded"
	"github.com/weftobs/weft/streams/natsauth"
	"github.com/weftobs/weft/streams/natsconn"
	"github.com/weftobs/weft/streams/provision"
	"github.com/weftobs/weft/streams/runner"
	"github.com/weftobs/weft/streams/stage"
	"github.com/weftobs/weft/streams/topology"
)

// procOptions configure a long-running weft process (up or run).
type procOptions struct {
	topologyFile string
	stages       []string // empty: all
	dataDir      string
	listen       string
	node         string
	nats         natsFlags
	embedNATS    bool   // up without --nats-url
	natsListen   string // embedded server's client address
	statusEvery  time.Duration
	replay       *stage.Replay
	neo4jURI     string // switches graph stages to Neo4j
	addOTLP      bool   // up: add an otlp stage when OTEL_EXPORTER_OTLP_ENDPOINT is set
	demo         bool   // up --demo: add a synthetic stage
	demoRate     int    // at this rate
	selfMetrics  bool   // push weft's own metrics over OTLP too
	apiTokenFile string // run: the HTTP API needs this bearer token
}

func newUpCmd() *cobra.Command {
	o := procOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole pipeline in one process on embedded defaults",
		Long: `Run every stage of a topology in this process: an embedded NATS JetStream
server (file storage under the data dir, clients served on --nats-listen),
an embedded graph store, and HTTP on --listen (/healthz, /readyz, /metrics).

--nats-url switches to an external NATS; the stages' own flags and the
standard OTEL_EXPORTER_OTLP_ENDPOINT switch the other parts. Without -f, the
built-in "local" topology runs. Ctrl-C drains every stage and exits 0; a
second "weft up" on the same data dir resumes where the first stopped.`,
		Example: `  weft up
  weft up -f examples/topologies/local.yaml --data-dir /tmp/weft
  weft up --nats-url nats://nats.example:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.embedNATS = !cmd.Flags().Changed("nats-url") && os.Getenv("WEFT_NATS_URL") == ""
			o.addOTLP = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
			return serve(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.topologyFile, "file", "f", "", "topology file (default: the built-in local topology)")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "where streams and stage state are kept [$WEFT_DATA_DIR]")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:7680", "HTTP address for /healthz, /readyz, /metrics, /api/v1/graph and the service map at /")
	fs.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server")
	fs.StringVar(&o.node, "node", nodeName(), "this node's name [$WEFT_NODE_NAME]")
	fs.DurationVar(&o.statusEvery, "status-every", 2*time.Second, "how often live counters are printed (0: never)")
	fs.BoolVar(&o.selfMetrics, "self-metrics-otlp", false, "also push weft's own metrics over OTLP (OTEL_EXPORTER_OTLP_* settings)")
	fs.BoolVar(&o.demo, "demo", false, "add a synthetic stage publishing a simulated cluster's events (traffic without privileges)")
	fs.IntVar(&o.demoRate, "demo-rate", 2000, "events per second of --demo")
	fs.StringVar(&o.neo4jURI, "neo4j-uri", os.Getenv("WEFT_NEO4J_URI"), "write the graph to this Neo4j instead of the embedded store (user/password from $WEFT_NEO4J_USER, $WEFT_NEO4J_PASSWORD) [$WEFT_NEO4J_URI]")
	o.nats.register(fs, natsconn.DefaultURL)
	return cmd
}

func newRunCmd() *cobra.Command {
	o := procOptions{}
	var stages string
	cmd := &cobra.Command{
		Use:   "run -f TOPOLOGY --stage NAME[,NAME…]",
		Short: "Run some stages of a topology against an external NATS (what each Kubernetes workload runs)",
		Example: `  weft run -f /etc/weft/topology.yaml --stage correlator
  weft run -f hybrid.yaml --stage graph,otlp --nats-url nats://nats:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.topologyFile == "" {
				return usageError{errors.New("-f TOPOLOGY is required")}
			}
			if stages == "" {
				return usageError{errors.New("--stage is required (one or more stage names, comma-separated)")}
			}
			o.stages = strings.Split(stages, ",")
			return serve(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.topologyFile, "file", "f", "", "topology file")
	fs.StringVar(&stages, "stage", "", "stages to run, comma-separated")
	fs.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "where stage state is kept [$WEFT_DATA_DIR]")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:7680", "HTTP address for /healthz, /readyz, /metrics")
	fs.StringVar(&o.node, "node", nodeName(), "this node's name [$WEFT_NODE_NAME]")
	fs.DurationVar(&o.statusEvery, "status-every", 0, "how often live counters are printed (0: never)")
	fs.BoolVar(&o.selfMetrics, "self-metrics-otlp", false, "also push weft's own metrics over OTLP (OTEL_EXPORTER_OTLP_* settings)")
	fs.StringVar(&o.apiTokenFile, "api-token-file", os.Getenv("WEFT_API_TOKEN_FILE"), "file holding the bearer token the HTTP API and service map require (/healthz, /readyz, /metrics stay open) [$WEFT_API_TOKEN_FILE]")
	o.nats.register(fs, natsconn.DefaultURL)
	return cmd
}

// loadTopology reads file, or the built-in local topology when file is "".
func loadTopology(file string, reg *stage.Registry) (*topology.Topology, error) {
	if file == "" {
		data, err := topologies.FS.ReadFile("local.yaml")
		if err != nil {
			return nil, err
		}
		return topology.Parse("(built-in) local.yaml", data, reg)
	}
	return topology.Load(file, reg)
}

// serve runs a process until ctx ends (Ctrl-C) or a stage fails.
func serve(ctx context.Context, out io.Writer, o procOptions) (err error) {
	log := slog.Default()
	reg := registry()
	topo, err := loadTopology(o.topologyFile, reg)
	if err != nil {
		return err
	}
	for _, name := range o.stages {
		if topo.Stage(name) == nil {
			return usageError{fmt.Errorf("%s: no stage %q (weft topology show -f %s lists them)", topo.File, name, topo.File)}
		}
	}
	if o.neo4jURI != "" {
		useNeo4j(topo, o.neo4jURI)
	}
	if o.addOTLP {
		if err := addOTLPStage(topo, reg); err != nil {
			return err
		}
	}
	if o.demo {
		if err := addDemoStage(topo, reg, o.demoRate); err != nil {
			return err
		}
	}
	var readers []sdkmetric.Reader
	if o.selfMetrics {
		rd, err := otlp.SelfMetricsReader(ctx, otlp.DefaultConfig(), log)
		if err != nil {
			return fmt.Errorf("--self-metrics-otlp: %w", err)
		}
		if rd != nil {
			readers = append(readers, rd)
		}
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(o.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	// Bind HTTP first: a taken port should fail before anything starts.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w (is another weft running? use --listen)", o.listen, err)
	}
	defer ln.Close()

	natsURL := o.nats.URL
	var srv *embedded.Server
	var sized string
	if o.embedNATS {
		var maxStore int64
		if o.topologyFile == "" {
			// The built-in topology's stream sizes are defaults, not the
			// user's word: fit them to this disk.
			if maxStore, sized, err = fitStreams(topo, o.dataDir); err != nil {
				return err
			}
		}
		srv, err = embedded.Start(embedded.Options{DataDir: o.dataDir, Listen: o.natsListen, MaxStore: maxStore, Logger: log.With("component", "nats")})
		if err != nil {
			return err
		}
		defer srv.Stop()
		natsURL = srv.URL()
		o.nats.URL = natsURL
	}
	o.nats.Name = "weft " + topo.Metadata.Name
	if len(o.stages) > 0 && o.nats.InboxPrefix == "" {
		// Replies under this process's own inboxes: the chart's NATS
		// lets a stage read no other inbox (natsauth.ForStages).
		o.nats.InboxPrefix = natsauth.InboxPrefix(topo, o.stages, o.node)
	}
	apiToken := ""
	if o.apiTokenFile != "" {
		b, err := os.ReadFile(o.apiTokenFile)
		if err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
		if apiToken = strings.TrimSpace(string(b)); apiToken == "" {
			return fmt.Errorf("--api-token-file %s is empty", o.apiTokenFile)
		}
	}
	// Serve HTTP from now on: while NATS is waited for (a fresh install
	// starts every pod at once), /healthz says alive and /readyz says
	// what it waits for; the runner's handler takes over once it exists.
	var handler atomic.Pointer[http.Handler]
	var waitingFor atomic.Pointer[string]
	var pre http.Handler = waitingMux(&waitingFor)
	handler.Store(&pre)
	httpSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		(*handler.Load()).ServeHTTP(w, req)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	defer httpSrv.Close()
	var nc *nats.Conn
	var js jetstream.JetStream
	if srv != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nc, js, err = natsconn.Connect(cctx, o.nats.Options, log.With("component", "nats-client"))
		cancel()
	} else {
		nc, js, err = natsconn.ConnectWait(ctx, o.nats.Options, log.With("component", "nats-client"), func(n int, err error) {
			msg := fmt.Sprintf("waiting for NATS (attempt %d): %v", n, err)
			waitingFor.Store(&msg)
		})
	}
	if err != nil {
		return err
	}
	defer nc.Close()
	var results []provision.Result
	if creators := provision.Creators(topo); nodeLocalOnly(topo, o.stages) && len(creators) > 0 {
		// A collector's DaemonSet does not create the streams (the
		// chart's NATS does not let it): it waits for the stages that do,
		// which may start after it on a fresh install.
		streams := provision.StreamsOf(topo, o.stages)
		err = provision.WaitStreams(ctx, js, streams, func(n int, missing []string) {
			if n == 1 {
				log.Info("waiting for streams to be created", "streams", missing, "by", creators)
			}
			msg := fmt.Sprintf("waiting for streams %s to be created by stage %s (attempt %d)", strings.Join(missing, ", "), strings.Join(creators, ", "), n)
			waitingFor.Store(&msg)
		})
		if err != nil {
			return err
		}
	} else {
		connected := "connected to NATS; provisioning streams"
		waitingFor.Store(&connected)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		maxReplicas := 0
		if srv != nil {
			maxReplicas = 1
		}
		results, err = provision.EnsureStreams(pctx, js, topo, provision.Options{MaxReplicas: maxReplicas})
		cancel()
		for _, r := range results {
			for _, n := range r.Notes {
				log.Info("stream "+r.Stream+": "+n, "stream", r.Stream)
			}
			logDrift(log, r)
		}
		if err != nil {
			return err
		}
	}

	r, err := runner.New(runner.Options{
		Topology: topo, Registry: reg, Stages: o.stages, JS: js,
		Node: o.node, DataDir: o.dataDir, Logger: log, Replay: o.replay,
		MetricReaders: readers, APIToken: apiToken,
	})
	if err != nil {
		return err
	}
	rh := r.Handler()
	handler.Store(&rh)
	if err := r.Start(ctx); err != nil {
		httpSrv.Close() // before the listener goes, so Serve ends quietly
		return err
	}

	fmt.Fprintf(out, "weft %s: topology %q, %d stages\n", version, topo.Metadata.Name, len(r.Counters()))
	fmt.Fprintf(out, "  data dir   %s\n", o.dataDir)
	if srv != nil {
		fmt.Fprintf(out, "  nats       %s (embedded, JetStream file store in %s/jetstream)\n", natsURL, o.dataDir)
	} else {
		fmt.Fprintf(out, "  nats       %s\n", natsURL)
	}
	if sized != "" {
		fmt.Fprintf(out, "  storage    %s\n", sized)
	}
	fmt.Fprintf(out, "  http       http://%s  (/healthz /readyz /metrics)\n", ln.Addr())
	if servesGraph(r.Handler()) {
		fmt.Fprintf(out, "  map        open http://%s/  (the service map; the graph is /api/v1/graph)\n", ln.Addr())
	}
	for _, res := range results {
		fmt.Fprintf(out, "  stream     %-8s %s%s\n", res.Stream, res.Action, driftSummary(res))
	}
	for _, d := range r.Degraded() {
		fmt.Fprintf(out, "  degraded   %s\n", d)
	}
	fmt.Fprintln(out, "  Ctrl-C drains and stops.")

	var runErr error
	var tick <-chan time.Time
	if o.statusEvery > 0 {
		t := time.NewTicker(o.statusEvery)
		defer t.Stop()
		tick = t.C
	}
	status := newStatusLine(out)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case runErr = <-r.Fatal():
			break loop
		case <-tick:
			status.print(r.Counters())
		}
	}
	status.print(r.Counters())
	status.done()
	fmt.Fprintln(out, "draining…")
	sctx, cancel := context.WithTimeout(context.Background(), stage.DefaultShutdownTimeout)
	defer cancel()
	shutErr := r.Shutdown(sctx)
	_ = httpSrv.Shutdown(sctx)
	if err := nc.Drain(); err != nil && runErr == nil {
		runErr = fmt.Errorf("drain nats connection: %w", err)
	}
	if err := errors.Join(runErr, shutErr); err != nil {
		return err
	}
	fmt.Fprintln(out, "stopped cleanly.")
	return nil
}

// statusLine prints live counters: redrawn in place on a terminal, one line
// per report otherwise.
type statusLine struct {
	out  io.Writer
	tty  bool
	last time.Time
	prev map[string]uint64
}

func newStatusLine(out io.Writer) *statusLine {
	tty := false
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &statusLine{out: out, tty: tty, last: time.Now(), prev: map[string]uint64{}}
}

func (s *statusLine) print(cs []runner.StageCounters) {
	now := time.Now()
	secs := now.Sub(s.last).Seconds()
	s.last = now
	var parts []string
	for _, c := range cs {
		total := c.EventsOut + c.EventsIn
		rate := float64(total-s.prev[c.Name]) / max(secs, 1e-9)
		s.prev[c.Name] = total
		p := fmt.Sprintf("%s: in %d out %d acked %d", c.Name, c.EventsIn, c.EventsOut, c.Acked)
		if c.Redelivered > 0 {
			p += fmt.Sprintf(" redelivered %d", c.Redelivered)
		}
		if c.DLQ > 0 {
			p += fmt.Sprintf(" dlq %d", c.DLQ)
		}
		if c.Dropped > 0 {
			p += fmt.Sprintf(" DROPPED %d", c.Dropped)
		}
		if c.Lost > 0 {
			p += fmt.Sprintf(" LOST %d", c.Lost)
		}
		p += fmt.Sprintf(" (%.0f/s)", rate)
		parts = append(parts, p)
	}
	line := strings.Join(parts, " | ")
	if s.tty {
		fmt.Fprintf(s.out, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(s.out, line)
	}
}

func (s *statusLine) done() {
	if s.tty {
		fmt.Fprintln(s.out)
	}
}

// useNeo4j switches every graph stage of topo to the Neo4j store at uri.
func useNeo4j(topo *topology.Topology, uri string) {
	for _, st := range topo.Stages {
		if c, ok := st.Config.(*graphstage.Config); ok {
			c.Store = graphstage.StoreNeo4j
			c.Neo4j.URI = uri
		}
	}
}

// addOTLPStage adds an in-process otlp stage reading CALLS and EVENTS when
// the topology has none: with OTEL_EXPORTER_OTLP_ENDPOINT set, `weft up`
// exports to that backend with no topology of one's own.
func addOTLPStage(topo *topology.Topology, reg *stage.Registry) error {
	var inputs []string
	for _, st := range topo.Stages {
		if st.Kind == "otlp" {
			return nil
		}
	}
	for _, name := range []string{"CALLS", "EVENTS"} {
		if topo.Stream(name) != nil {
			inputs = append(inputs, name)
		}
	}
	k, ok := reg.Lookup("otlp")
	if !ok || len(inputs) == 0 {
		return nil
	}
	cfg := k.NewConfig()
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("otlp stage from OTEL_EXPORTER_OTLP_*: %w", err)
		}
	}
	topo.Stages = append(topo.Stages, &topology.Stage{Name: "otlp", Kind: "otlp", Deploy: stage.DeployInProcess, Inputs: inputs, Config: cfg})
	return nil
}

// servesGraph reports whether h serves /api/v1/graph (a graph stage runs
// here), and so the service map at /.
func servesGraph(h http.Handler) bool {
	m, ok := h.(interface {
		Handler(*http.Request) (http.Handler, string)
	})
	if !ok {
		return false
	}
	req, err := http.NewRequest(http.MethodGet, "/api/v1/graph", nil)
	if err != nil {
		return false
	}
	_, pattern := m.Handler(req)
	return pattern != ""
}

// addDemoStage adds a synthetic stage publishing to EVENTS (weft up --demo).
func addDemoStage(topo *topology.Topology, reg *stage.Registry, rate int) error {
	if topo.Stream("EVENTS") == nil || topo.Stage("demo") != nil {
		return fmt.Errorf("--demo needs an EVENTS stream and no stage named demo in %s", topo.File)
	}
	k, ok := reg.Lookup("synthetic")
	if !ok {
		return fmt.Errorf("--demo: this build has no synthetic kind")
	}
	cfg := k.NewConfig().(*synthetic.Config)
	cfg.Rate = rate
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("--demo-rate: %w", err)
	}
	topo.Stages = append([]*topology.Stage{{Name: "demo", Kind: "synthetic", Deploy: stage.DeployInProcess, Outputs: []string{"EVENTS"}, Config: cfg}}, topo.Stages...)
	return nil
}

// fitStreams sizes the streams of the built-in topology to the free space
// of the data dir's filesystem (embedded.FitStreams), sets their maxBytes,
// and returns the JetStream store maximum and a line saying what was
// reserved and how to change it.
func fitStreams(topo *topology.Topology, dataDir string) (int64, string, error) {
	avail, err := embedded.Available(dataDir)
	if err != nil {
		return 0, "", err
	}
	want := map[string]int64{}
	for _, st := range topo.Streams {
		want[st.Name] = int64(st.MaxBytes)
	}
	fit := embedded.FitStreams(avail, want)
	var parts []string
	for _, st := range topo.Streams {
		st.MaxBytes = topology.ByteSize(fit.MaxBytes[st.Name])
		if st.MaxBytes > 0 {
			parts = append(parts, st.Name+" "+iecBytes(int64(st.MaxBytes)))
		}
	}
	line := fmt.Sprintf("%s reserved of %s available in %s, JetStream max %s", strings.Join(parts, ", "), iecBytes(avail), dataDir, iecBytes(fit.MaxStore))
	if fit.Shrunk {
		line += fmt.Sprintf("\n             (shrunk to fit this disk, %.0f%% of the space at most; set each stream's maxBytes in a topology file, weft up -f FILE, to choose)", embedded.StoreShare*100)
	}
	return fit.MaxStore, line, nil
}

// iecBytes writes b in the largest binary unit that keeps it at 1 or more.
func iecBytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTP"[exp])
}

// logDrift shows, field by field, how a live stream differed from the
// topology and what was done about it: an operator's edit is never
// reverted (or kept) silently.
func logDrift(log *slog.Logger, r provision.Result) {
	what := "the topology's value applied (set onDrift: keep on the stream to keep live edits)"
	switch r.Action {
	case provision.Kept:
		what = "the live value kept (onDrift: keep)"
	case provision.Refused:
		what = "nothing changed"
	}
	for _, d := range r.Drift {
		log.Warn(d.String()+": "+what, "stream", d.Stream, "field", d.Field, "live", d.Live, "topology", d.Topology, "action", string(r.Action))
	}
}

// driftSummary is the startup line's note on a stream that had drifted.
func driftSummary(r provision.Result) string {
	if len(r.Drift) == 0 {
		return ""
	}
	fields := make([]string, len(r.Drift))
	for i, d := range r.Drift {
		fields[i] = d.Field
	}
	return " (live differed from the topology: " + strings.Join(fields, ", ") + ")"
}

// nodeLocalOnly: stages (weft run --stage) are all node-local; weft up
// (no stages named) runs every stage.
func nodeLocalOnly(t *topology.Topology, stages []string) bool {
	if len(stages) == 0 {
		return false
	}
	for _, n := range stages {
		if def := t.Stage(n); def == nil || !t.NodeLocal(def) {
			return false
		}
	}
	return true
}

// waitingMux serves /healthz and /readyz while the process waits for NATS:
// alive, and not ready with what it waits for.
func waitingMux(what *atomic.Pointer[string]) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		msg := "starting"
		if p := what.Load(); p != nil {
			msg = *p
		}
		http.Error(w, "not ready: "+msg, http.StatusServiceUnavailable)
	})
	return mux
}
