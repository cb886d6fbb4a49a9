// Package neo4jstore is the Neo4j graph store: batches go in as
// parameterised `UNWIND $rows … MERGE` statements inside one managed write
// transaction (retried by the driver) that also records the last applied
// CALLS sequence, so a batch written twice changes nothing. It runs the
// schema migrations of package migrations. It is the only package that
// imports the Neo4j driver.
package neo4jstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/migrations"
)

// Config says where Neo4j is.
type Config struct {
	// URI is bolt://, neo4j://, or neo4j+s:// / bolt+s:// for TLS.
	URI      string `yaml:"uri" json:"uri"`
	User     string `yaml:"user" json:"user"`
	Password string `yaml:"password" json:"-"`
	// Database is always sent; default "neo4j".
	Database string `yaml:"database" json:"database"`
	// Stream is the stream whose sequence the store records; default CALLS.
	Stream string `yaml:"stream" json:"stream"`
}

// FromEnv fills what is unset from WEFT_NEO4J_URI, WEFT_NEO4J_USER and
// WEFT_NEO4J_PASSWORD, and the defaults.
func (c *Config) FromEnv() {
	if c.URI == "" {
		c.URI = os.Getenv("WEFT_NEO4J_URI")
	}
	if c.User == "" {
		c.User = os.Getenv("WEFT_NEO4J_USER")
	}
	if c.Password == "" {
		c.Password = os.Getenv("WEFT_NEO4J_PASSWORD")
	}
	if c.User == "" {
		c.User = "neo4j"
	}
	if c.Database == "" {
		c.Database = "neo4j"
	}
	if c.Stream == "" {
		c.Stream = "CALLS"
	}
}

// Validate reports every problem.
func (c *Config) Validate() error {
	var errs []error
	if c.URI == "" {
		errs = append(errs, errors.New("neo4j uri: not set (--neo4j-uri or WEFT_NEO4J_URI)"))
	} else if u, err := url.Parse(c.URI); err != nil {
		errs = append(errs, fmt.Errorf("neo4j uri %q: %w", c.URI, err))
	} else {
		switch u.Scheme {
		case "bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc":
		default:
			errs = append(errs, fmt.Errorf("neo4j uri %q: scheme %q, want bolt, neo4j or their +s/+ssc TLS forms", c.URI, u.Scheme))
		}
	}
	return errors.Join(errs...)
}

// Store is the Neo4j store.
type Store struct {
	cfg    Config
	driver neo4j.DriverWithContext

	timesMu sync.Mutex
	times   Times
}

// Times says where Apply's time went, summed over every transaction that
// committed since Open: per statement, the server's time (the summary's
// result-available plus result-consumed times) against the statement's
// round trip as the client saw it; and each transaction whole, from
// opening the session to its commit's answer.
type Times struct {
	Transactions int
	Total        time.Duration
	Statements   map[string]StatementTime
}

// StatementTime is one statement's share of Times.
type StatementTime struct {
	Runs, Rows     int
	Server, Client time.Duration
}

// Times returns a copy of where Apply's time went so far.
func (s *Store) Times() Times {
	s.timesMu.Lock()
	defer s.timesMu.Unlock()
	t := s.times
	t.Statements = maps.Clone(s.times.Statements)
	return t
}

// timed runs one statement of Apply and notes its times in into.
func timed(ctx context.Context, tx neo4j.ManagedTransaction, name, cypher string, params map[string]any, into map[string]StatementTime) error {
	begin := time.Now()
	res, err := tx.Run(ctx, cypher, params)
	if err != nil {
		return err
	}
	sum, err := res.Consume(ctx)
	if err != nil {
		return err
	}
	t := into[name]
	t.Runs++
	if rows, ok := params["rows"].([]any); ok {
		t.Rows += len(rows)
	}
	t.Server += sum.ResultAvailableAfter() + sum.ResultConsumedAfter()
	t.Client += time.Since(begin)
	into[name] = t
	return nil
}

var _ graph.Store = (*Store)(nil)

// Open connects and verifies connectivity.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.FromEnv()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, err := neo4j.NewDriverWithContext(cfg.URI, neo4j.BasicAuth(cfg.User, cfg.Password, ""))
	if err != nil {
		return nil, fmt.Errorf("neo4j %s: %w", cfg.URI, err)
	}
	if err := d.VerifyConnectivity(ctx); err != nil {
		_ = d.Close(ctx)
		return nil, describe(cfg, "", err)
	}
	return &Store{cfg: cfg, driver: d}, nil
}

// Close implements graph.Store.
func (s *Store) Close(ctx context.Context) error { return s.driver.Close(ctx) }

// session opens a session on the configured database. It shares the
// bookmark manager of neo4j.ExecuteQuery (which Migrate uses), so every
// read sees what this store wrote before, by either route, even when a
// cluster sends the read to another member than the write.
func (s *Store) session(ctx context.Context, mode neo4j.AccessMode) neo4j.SessionWithContext {
	return s.driver.NewSession(ctx, neo4j.SessionConfig{DatabaseName: s.cfg.Database, AccessMode: mode,
		BookmarkManager: s.driver.ExecuteQueryBookmarkManager()})
}

// LastSeq implements graph.Store.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		return single(ctx, tx, peekCursor, map[string]any{"stream": s.cfg.Stream}, "last_seq")
	})
	if err != nil {
		return 0, s.describe("read last applied "+s.cfg.Stream+" sequence", err)
	}
	n, _ := v.(int64)
	return uint64(n), nil
}

// Empty reports whether the database holds no weft graph: no node of the
// graph's labels and no recorded stream sequence (a cursor left behind by
// a deleted graph would make a replay skip everything up to it).
func (s *Store) Empty(ctx context.Context) (bool, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		return single(ctx, tx, countGraph, nil, "n")
	})
	if err != nil {
		return false, s.describe("count nodes", err)
	}
	n, _ := v.(int64)
	return n == 0, nil
}

// single runs a statement that returns one row and returns its key.
func single(ctx context.Context, tx neo4j.ManagedTransaction, cypher string, params map[string]any, key string) (any, error) {
	rows, err := collect(ctx, tx, cypher, params)
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("%d rows, want 1", len(rows))
	}
	return rows[0][key], nil
}

// collect runs a statement and returns its rows.
func collect(ctx context.Context, tx neo4j.ManagedTransaction, cypher string, params map[string]any) ([]map[string]any, error) {
	res, err := tx.Run(ctx, cypher, params)
	if err != nil {
		return nil, err
	}
	recs, err := res.Collect(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, len(recs))
	for i, r := range recs {
		out[i] = r.AsMap()
	}
	return out, nil
}

// Apply implements graph.Store: one managed write transaction per batch.
// The transaction first write-locks the stream's cursor node and reads
// it, so two writers of the same batch serialise and the second sees the
// first's sequence and skips the batch.
func (s *Store) Apply(ctx context.Context, b *graph.Batch) error {
	stmts := Render(b)
	begin := time.Now()
	var times map[string]StatementTime
	sess := s.session(ctx, neo4j.AccessModeWrite)
	defer sess.Close(ctx)
	_, err := sess.ExecuteWrite(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		times = map[string]StatementTime{} // this attempt's
		v, err := single(ctx, tx, readCursor, map[string]any{"stream": s.cfg.Stream}, "last_seq")
		if err != nil {
			return nil, &stmtError{"read cursor", err}
		}
		if last, _ := v.(int64); b.Seq != 0 && uint64(last) >= b.Seq {
			return nil, nil // already applied: a replay or a retry after a lost ack
		}
		for _, st := range stmts {
			if err := timed(ctx, tx, st.Name, st.Cypher, st.Parameters, times); err != nil {
				return nil, &stmtError{st.Name, err}
			}
		}
		if b.Seq != 0 {
			if err := timed(ctx, tx, "write cursor", writeCursor, map[string]any{"stream": s.cfg.Stream, "seq": int64(b.Seq)}, times); err != nil {
				return nil, &stmtError{"write cursor", err}
			}
		}
		return nil, nil
	})
	if err != nil {
		return s.describe(fmt.Sprintf("apply batch up to %s seq %d", s.cfg.Stream, b.Seq), err)
	}
	s.timesMu.Lock()
	s.times.Transactions++
	s.times.Total += time.Since(begin)
	if s.times.Statements == nil {
		s.times.Statements = map[string]StatementTime{}
	}
	for name, t := range times {
		all := s.times.Statements[name]
		all.Runs, all.Rows = all.Runs+t.Runs, all.Rows+t.Rows
		all.Server, all.Client = all.Server+t.Server, all.Client+t.Client
		s.times.Statements[name] = all
	}
	s.timesMu.Unlock()
	return nil
}

// Render turns a batch into parameterised statements, in the order they
// must run: nodes, broker labels, ends, structural links, then CALLS.
func Render(b *graph.Batch) []Statement {
	var out []Statement
	ents := map[string][]any{}
	brokers := map[string][]any{}
	ends := map[string][]any{}
	for _, e := range b.Entities {
		props := map[string]any{}
		for k, v := range e.Props {
			props[k] = v
		}
		ents[e.Ref.Label] = append(ents[e.Ref.Label], map[string]any{"key": refKey(e.Ref), "props": props})
		if e.Broker != "" {
			brokers[e.Ref.Label] = append(brokers[e.Ref.Label], map[string]any{"key": refKey(e.Ref), "broker": e.Broker})
		}
		if e.EndedAt != 0 {
			ends[e.Ref.Label] = append(ends[e.Ref.Label], map[string]any{"key": refKey(e.Ref), "ended_at": e.EndedAt})
		}
	}
	for _, l := range entityLabels {
		if rows := ents[l]; len(rows) > 0 {
			out = append(out, Statement{Name: "upsert " + l, Cypher: upsertEntity(l), Parameters: map[string]any{"rows": rows, "bucket": b.Bucket}})
		}
	}
	for _, l := range entityLabels {
		if rows := brokers[l]; len(rows) > 0 {
			out = append(out, Statement{Name: "broker " + l, Cypher: markBroker(l), Parameters: map[string]any{"rows": rows}})
		}
	}
	for _, l := range endLabels {
		if rows := ends[l]; len(rows) > 0 {
			out = append(out, Statement{Name: "end " + l, Cypher: endEntity(l), Parameters: map[string]any{"rows": rows, "bucket": b.Bucket}})
		}
	}
	links := map[linkShape][]any{}
	for _, l := range b.Links {
		sh := linkShape{l.Type, l.From.Label, l.To.Label}
		links[sh] = append(links[sh], map[string]any{"from": refKey(l.From), "to": refKey(l.To)})
	}
	for _, sh := range linkShapes {
		if rows := links[sh]; len(rows) > 0 {
			out = append(out, Statement{Name: "link " + sh.Type, Cypher: mergeLink(sh), Parameters: map[string]any{"rows": rows, "bucket": b.Bucket}})
		}
	}
	calls := map[callShape][]any{}
	for _, d := range b.Edges {
		sh := callShape{d.From.Label, d.To.Label, d.Transport == "unix"}
		row := map[string]any{
			"from": refKey(d.From), "to": refKey(d.To), "transport": d.Transport,
			"count": int64(d.Count), "bytes_sent": int64(d.BytesSent), "bytes_received": int64(d.BytesReceived), "errors": int64(d.Errors),
			"first_seen": d.FirstSeen, "last_seen": d.LastSeen,
		}
		if sh.Unix {
			row["path"] = d.Path
		} else {
			row["port"] = int64(d.Port)
		}
		calls[sh] = append(calls[sh], row)
	}
	for _, sh := range callShapes {
		if rows := calls[sh]; len(rows) > 0 {
			if b.Bucket != 0 {
				out = append(out, Statement{Name: sh.name() + " bucketed", Cypher: addCalls(sh, true), Parameters: map[string]any{"rows": rows, "bucket": b.Bucket}})
			} else {
				out = append(out, Statement{Name: sh.name(), Cypher: addCalls(sh, false), Parameters: map[string]any{"rows": rows}})
			}
		}
	}
	return out
}

var _ graph.Retainer = (*Store)(nil)

// Retain implements graph.Retainer: the retention statements and the cut,
// in one write transaction after the stream's cursor lock, so a batch
// written at the same time comes wholly before or after it.
func (s *Store) Retain(ctx context.Context, cut int64) error {
	sess := s.session(ctx, neo4j.AccessModeWrite)
	defer sess.Close(ctx)
	_, err := sess.ExecuteWrite(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		if _, err := single(ctx, tx, readCursor, map[string]any{"stream": s.cfg.Stream}, "last_seq"); err != nil {
			return nil, &stmtError{"read cursor", err}
		}
		v, err := single(ctx, tx, readRetained, map[string]any{"stream": s.cfg.Stream}, "retained_from")
		if err != nil {
			return nil, &stmtError{"read retained", err}
		}
		if from, _ := v.(int64); cut <= from {
			return nil, nil
		}
		for _, st := range retainStatements {
			if _, err := collect(ctx, tx, st.Cypher, map[string]any{"cut": cut}); err != nil {
				return nil, &stmtError{st.Name, err}
			}
		}
		if _, err := collect(ctx, tx, writeRetained, map[string]any{"stream": s.cfg.Stream, "cut": cut}); err != nil {
			return nil, &stmtError{"write retained", err}
		}
		return nil, nil
	})
	if err != nil {
		return s.describe(fmt.Sprintf("drop %s retention buckets before %d", s.cfg.Stream, cut), err)
	}
	return nil
}

// RetainedFrom implements graph.Retainer.
func (s *Store) RetainedFrom(ctx context.Context) (int64, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		return single(ctx, tx, readRetained, map[string]any{"stream": s.cfg.Stream}, "retained_from")
	})
	if err != nil {
		return 0, s.describe("read "+s.cfg.Stream+" retention cut", err)
	}
	n, _ := v.(int64)
	return n, nil
}

// Status is the database's migration state.
type Status struct {
	Applied []migrations.Applied
	Pending []migrations.Migration
}

// MigrationStatus reads the history and plans against the embedded
// migrations.
func (s *Store) MigrationStatus(ctx context.Context) (*Status, error) {
	all, err := migrations.All()
	if err != nil {
		return nil, err
	}
	applied, err := s.history(ctx)
	if err != nil {
		return nil, err
	}
	pending, err := migrations.Plan(all, applied)
	if err != nil {
		return &Status{Applied: applied}, err
	}
	return &Status{Applied: applied, Pending: pending}, nil
}

// ErrPendingMigrations is in the error of CheckMigrations when the
// database is behind this release's migrations.
var ErrPendingMigrations = errors.New("pending migrations")

// CheckMigrations returns an error naming every pending migration: an
// *Error that IsUnavailable, since applying them (weft migrate up, the
// chart's migrations job) makes the store usable without restarting
// anything.
func (s *Store) CheckMigrations(ctx context.Context) error {
	st, err := s.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	if len(st.Pending) > 0 {
		var names []string
		for _, m := range st.Pending {
			names = append(names, m.Name())
		}
		db := ""
		if s.cfg.Database != "neo4j" {
			db = " --neo4j-database " + s.cfg.Database
		}
		return &Error{URI: s.cfg.URI, Op: "check migrations", Unavailable: true, Err: ErrPendingMigrations,
			Reason: fmt.Sprintf("database %q has %d pending migrations (%s): run `weft migrate up --neo4j-uri %s%s` (the chart's migrations job does)",
				s.cfg.Database, len(st.Pending), strings.Join(names, ", "), s.cfg.URI, db)}
	}
	return nil
}

func (s *Store) history(ctx context.Context) ([]migrations.Applied, error) {
	sess := s.session(ctx, neo4j.AccessModeRead)
	defer sess.Close(ctx)
	v, err := sess.ExecuteRead(ctx, func(tx neo4j.ManagedTransaction) (any, error) {
		rows, err := collect(ctx, tx, migrations.History, nil)
		if err != nil {
			return nil, err
		}
		var out []migrations.Applied
		for _, m := range rows {
			v, _ := m["version"].(int64)
			d, _ := m["description"].(string)
			c, _ := m["checksum"].(string)
			a, _ := m["applied_at"].(string)
			out = append(out, migrations.Applied{Version: int(v), Description: d, Checksum: c, AppliedAt: a})
		}
		return out, nil
	})
	if err != nil {
		return nil, s.describe("read migration history", err)
	}
	out, _ := v.([]migrations.Applied)
	return out, nil
}

// ErrLocked is returned when another run holds the migration lock.
var ErrLocked = errors.New("another weft migrate holds the migration lock")

// Migrate applies the pending migrations under the lock, each statement
// in its own transaction (schema changes cannot share one), recording
// each migration after its statements. It returns what it applied.
func (s *Store) Migrate(ctx context.Context, holder string, ttl time.Duration) ([]migrations.Migration, error) {
	if err := s.lockConstraint(ctx); err != nil {
		return nil, err
	}
	res, err := neo4j.ExecuteQuery(ctx, s.driver, migrations.Lock, map[string]any{"holder": holder, "ttl_seconds": int64(ttl.Seconds())},
		neo4j.EagerResultTransformer, neo4j.ExecuteQueryWithDatabase(s.cfg.Database))
	if err != nil {
		return nil, s.describe("take migration lock", err)
	}
	if len(res.Records) == 0 {
		return nil, fmt.Errorf("%w (it expires %v after it was taken)", ErrLocked, ttl)
	}
	defer func() {
		_, _ = neo4j.ExecuteQuery(context.WithoutCancel(ctx), s.driver, migrations.Unlock, map[string]any{"holder": holder},
			neo4j.EagerResultTransformer, neo4j.ExecuteQueryWithDatabase(s.cfg.Database))
	}()
	st, err := s.MigrationStatus(ctx)
	if err != nil {
		return nil, err
	}
	var done []migrations.Migration
	for _, m := range st.Pending {
		for i, stmt := range m.Statements {
			if _, err := neo4j.ExecuteQuery(ctx, s.driver, stmt, nil, neo4j.EagerResultTransformer, neo4j.ExecuteQueryWithDatabase(s.cfg.Database)); err != nil {
				return done, s.describe(fmt.Sprintf("migration %s statement %d", m.Name(), i+1), err)
			}
		}
		if _, err := neo4j.ExecuteQuery(ctx, s.driver, migrations.Record,
			map[string]any{"version": int64(m.Version), "description": m.Description, "checksum": m.Checksum},
			neo4j.EagerResultTransformer, neo4j.ExecuteQueryWithDatabase(s.cfg.Database)); err != nil {
			return done, s.describe("record migration "+m.Name(), err)
		}
		done = append(done, m)
	}
	return done, nil
}

// lockConstraint creates the lock's uniqueness constraint. It runs before
// the lock exists, so two first runs of `weft migrate up` create it at
// once; Neo4j does not document that IF NOT EXISTS makes the loser of that
// race a no-op rather than an error, so a failure is tried once more, when
// IF NOT EXISTS sees the winner's constraint.
func (s *Store) lockConstraint(ctx context.Context) error {
	var err error
	for range 2 {
		if _, err = neo4j.ExecuteQuery(ctx, s.driver, migrations.LockConstraint, nil, neo4j.EagerResultTransformer,
			neo4j.ExecuteQueryWithDatabase(s.cfg.Database)); err == nil {
			return nil
		}
	}
	return s.describe("create migration lock constraint", err)
}
