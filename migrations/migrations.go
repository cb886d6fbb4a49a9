// Package migrations holds weft's Neo4j schema migrations (V001__name.cypher
// …, embedded in the binary), parses them, and plans what to apply against
// a database's history of (:WeftMigration {version, description, checksum,
// applied_at}). It also holds the Cypher of that history and of the lock.
// It runs nothing: the Neo4j store executes the plan (only it imports the
// driver).
package migrations

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.cypher
var files embed.FS

// Migration is one file.
type Migration struct {
	Version     int
	Description string
	File        string
	Checksum    string // sha256 of the file, hex
	Statements  []string
}

// Name is "V001 constraints".
func (m Migration) Name() string { return fmt.Sprintf("V%03d %s", m.Version, m.Description) }

// Applied is one history entry.
type Applied struct {
	Version     int
	Description string
	Checksum    string
	AppliedAt   string
}

var fileName = regexp.MustCompile(`^V(\d+)__([A-Za-z0-9_]+)\.cypher$`)

// All returns the embedded migrations, by version.
func All() ([]Migration, error) { return Parse(files) }

// Parse reads the migrations of fsys's root.
func Parse(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.cypher")
	if err != nil {
		return nil, err
	}
	var out []Migration
	var errs []error
	seen := map[int]string{}
	for _, n := range names {
		m := fileName.FindStringSubmatch(n)
		if m == nil {
			errs = append(errs, fmt.Errorf("migration %s: name must be V<version>__<description>.cypher", n))
			continue
		}
		v, _ := strconv.Atoi(m[1])
		if prev, dup := seen[v]; dup {
			errs = append(errs, fmt.Errorf("migrations %s and %s have the same version %d", prev, n, v))
			continue
		}
		seen[v] = n
		data, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		stmts := Split(string(data))
		if len(stmts) == 0 {
			errs = append(errs, fmt.Errorf("migration %s has no statement", n))
		}
		out = append(out, Migration{Version: v, Description: strings.ReplaceAll(m[2], "_", " "), File: n,
			Checksum: hex.EncodeToString(sum[:]), Statements: stmts})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Version < out[b].Version })
	return out, errors.Join(errs...)
}

// Split cuts a migration file into statements at semicolons ending a line;
// lines starting with // are comments.
func Split(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "//") {
			continue
		}
		cur.WriteString(t)
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSpace(strings.TrimSuffix(cur.String(), ";"))
			if s != "" {
				out = append(out, s)
			}
			cur.Reset()
			continue
		}
		cur.WriteByte(' ')
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// ErrEdited is returned when an applied migration's file changed.
var ErrEdited = errors.New("applied migration was edited")

// Plan returns the migrations not yet applied, in order. An applied
// migration whose checksum differs from its file is refused with
// ErrEdited; an applied version this build does not know is refused too
// (the database is newer than the binary).
func Plan(all []Migration, applied []Applied) ([]Migration, error) {
	byVersion := map[int]Applied{}
	for _, a := range applied {
		byVersion[a.Version] = a
	}
	known := map[int]bool{}
	var pending []Migration
	var errs []error
	for _, m := range all {
		known[m.Version] = true
		a, ok := byVersion[m.Version]
		if !ok {
			pending = append(pending, m)
			continue
		}
		if a.Checksum != m.Checksum {
			errs = append(errs, fmt.Errorf("%w: %s (%s) was applied at %s with checksum %s, the file now has %s; never edit an applied migration, add a new one",
				ErrEdited, m.Name(), m.File, a.AppliedAt, short(a.Checksum), short(m.Checksum)))
		}
	}
	for _, a := range applied {
		if !known[a.Version] {
			errs = append(errs, fmt.Errorf("the database has migration V%03d %s, which this build does not know: it is newer than this binary", a.Version, a.Description))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return pending, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// Cypher of the history and the lock, with the parameters each takes.
const (
	// LockConstraint makes the lock node unique; it is idempotent and runs
	// before the lock is taken.
	LockConstraint = "CREATE CONSTRAINT weft_migration_lock IF NOT EXISTS FOR (l:WeftMigrationLock) REQUIRE l.id IS UNIQUE"
	// Lock takes the lock for $holder unless another holder took it less
	// than $ttl_seconds ago; it returns a row only when $holder holds it.
	Lock = "MERGE (l:WeftMigrationLock {id: 1}) " +
		"ON CREATE SET l.holder = $holder, l.acquired_at = datetime() " +
		"WITH l WHERE l.holder = $holder OR l.acquired_at < datetime() - duration({seconds: $ttl_seconds}) " +
		"SET l.holder = $holder, l.acquired_at = datetime() " +
		"RETURN l.holder AS holder"
	// Unlock releases the lock held by $holder.
	Unlock = "MATCH (l:WeftMigrationLock {id: 1, holder: $holder}) DELETE l"
	// History lists the applied migrations.
	History = "MATCH (m:WeftMigration) RETURN m.version AS version, m.description AS description, m.checksum AS checksum, toString(m.applied_at) AS applied_at ORDER BY m.version"
	// Record adds one applied migration to the history.
	Record = "CREATE (m:WeftMigration {version: $version, description: $description, checksum: $checksum, applied_at: datetime()})"
)
