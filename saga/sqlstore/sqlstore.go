// Package sqlstore implements saga.Store on PostgreSQL (through pgx, as a
// database/sql driver) and on SQLite (through modernc.org/sqlite, pure Go),
// with the same SQL.
//
// Each store keeps two tables, named after Options.TablePrefix:
// <prefix>instances holds one row per saga instance (the instance as JSON plus the columns that
// queries and the version check use) and <prefix>records holds participants'
// deduplication records. Open creates them when missing, and upgrades tables
// made by earlier versions (columns and indexes added since); opening is
// idempotent and safe from several processes at once.
//
// Every update is a single statement guarded by the row's version, so several
// orchestrator and participant processes may share one PostgreSQL database.
// A SQLite store runs in WAL mode with a busy timeout and one connection per
// process; it is meant for one process (the embedded default), and several
// processes on one machine may share its file at a lower throughput (the
// saga crash test runs four). A process killed mid-transaction leaves no
// partial write on either.
//
// Errors wrap the database's error once, prefixed "sqlstore:"; Load's missing
// instance matches saga.ErrNotFound and a lost version race saga.ErrConflict.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"github.com/marty-msf/eventbus/saga"
)

// Options configures a store. nil means defaults.
type Options struct {
	// TablePrefix names the tables: letters, digits and '_'. Default
	// "saga_". Distinct prefixes keep stores apart in one database.
	TablePrefix string
	// MaxConns bounds the PostgreSQL connections the store opens. Default
	// 32. A SQLite store always uses one.
	MaxConns int
}

// Store is a saga.Store on a SQL database. It is safe for concurrent use.
type Store struct {
	db       *sql.DB
	postgres bool
	q        queries
}

var _ saga.Store = (*Store)(nil)

// OpenPostgres connects to the PostgreSQL database at url
// (postgres://user@host:port/db?...) and creates the tables when missing.
func OpenPostgres(ctx context.Context, url string, opts *Options) (*Store, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open postgres: %w", err)
	}
	conns := 32
	if opts != nil && opts.MaxConns > 0 {
		conns = opts.MaxConns
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return open(ctx, db, true, opts)
}

// OpenSQLite opens (creating it when missing) the SQLite database file at
// path in WAL mode and creates the tables when missing.
func OpenSQLite(ctx context.Context, path string, opts *Options) (*Store, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open sqlite %q: %w", path, err)
	}
	// SQLite has one writer at a time; one connection queues writers in
	// the process instead of failing them with SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	return open(ctx, db, false, opts)
}

func open(ctx context.Context, db *sql.DB, postgres bool, opts *Options) (*Store, error) {
	prefix := "saga_"
	if opts != nil && opts.TablePrefix != "" {
		prefix = opts.TablePrefix
	}
	for _, c := range prefix {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			db.Close()
			return nil, fmt.Errorf("sqlstore: table prefix %q: only letters, digits and '_' allowed", prefix)
		}
	}
	s := &Store{db: db, postgres: postgres, q: newQueries(strings.ToLower(prefix))}
	if err := s.migrate(ctx, prefix); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// DB returns the underlying database handle.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database handle.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sqlstore: close: %w", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context, prefix string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		// Concurrent CREATE TABLE IF NOT EXISTS can still collide in
		// PostgreSQL's catalog; a transaction-scoped lock serializes them.
		h := fnv.New64a()
		h.Write([]byte("eventbus/saga/" + prefix))
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
	}
	for _, stmt := range s.q.schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
	}
	if err := s.addRunsColumn(ctx, tx); err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	return nil
}

// addRunsColumn upgrades a records table created before records counted
// their claims.
func (s *Store) addRunsColumn(ctx context.Context, tx *sql.Tx) error {
	if s.postgres {
		_, err := tx.ExecContext(ctx, strings.Replace(s.q.addRuns, "ADD COLUMN", "ADD COLUMN IF NOT EXISTS", 1))
		return err
	}
	rows, err := tx.QueryContext(ctx, s.q.recColumns)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		if name == "runs" {
			return nil
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.q.addRuns)
	return err
}

type queries struct {
	schema                                         []string
	addRuns, recColumns                            string
	create, load, update, recordRequest, due       string
	renew, release                                 string
	claim, claimLoad, complete, releaseClaim, list string
	renewClaim                                     string
}

func newQueries(p string) queries {
	inst, rec := p+"instances", p+"records"
	return queries{
		schema: []string{
			`CREATE TABLE IF NOT EXISTS ` + inst + ` (
				id TEXT PRIMARY KEY,
				name TEXT NOT NULL,
				state TEXT NOT NULL,
				version BIGINT NOT NULL,
				wake_at BIGINT NOT NULL,
				owner TEXT NOT NULL,
				lease_until BIGINT NOT NULL,
				created BIGINT NOT NULL,
				body TEXT NOT NULL)`,
			`CREATE INDEX IF NOT EXISTS ` + inst + `_active ON ` + inst + ` (state, wake_at)`,
			`CREATE INDEX IF NOT EXISTS ` + inst + `_owner ON ` + inst + ` (owner, state)`,
			// Due finds requests for sagas in any state by wake_at; only
			// due-able rows (wake_at > 0) are indexed. Existing databases
			// get it when opened.
			`CREATE INDEX IF NOT EXISTS ` + inst + `_wake ON ` + inst + ` (wake_at) WHERE wake_at > 0`,
			`CREATE TABLE IF NOT EXISTS ` + rec + ` (
				rkey TEXT PRIMARY KEY,
				done INTEGER NOT NULL,
				outcome TEXT NOT NULL,
				reply TEXT NOT NULL,
				error TEXT NOT NULL,
				owner TEXT NOT NULL,
				lease_until BIGINT NOT NULL,
				updated BIGINT NOT NULL,
				runs INTEGER NOT NULL DEFAULT 1)`,
		},
		addRuns:    `ALTER TABLE ` + rec + ` ADD COLUMN runs INTEGER NOT NULL DEFAULT 1`,
		recColumns: `SELECT name FROM pragma_table_info('` + rec + `')`,
		create: `INSERT INTO ` + inst + ` (id, name, state, version, wake_at, owner, lease_until, created, body)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`,
		load:          `SELECT version, owner, lease_until, body FROM ` + inst + ` WHERE id = $1`,
		update:        `UPDATE ` + inst + ` SET state = $1, version = $2, wake_at = $3, owner = $4, lease_until = $5, body = $6 WHERE id = $7 AND version = $8`,
		recordRequest: `UPDATE ` + inst + ` SET state = $1, version = $2, wake_at = $3, body = $4 WHERE id = $5 AND version = $6`,
		// wake_at is set for active sagas and for any saga with a pending
		// request (saga.Instance.WakeAt). Each term of the OR has an index
		// (an IN would make SQLite scan the table for its term).
		due: `SELECT id FROM ` + inst + ` WHERE (wake_at > 0 AND wake_at <= $1)
			OR (state = 'running' AND lease_until <= $1) OR (state = 'compensating' AND lease_until <= $1)
			ORDER BY wake_at LIMIT $2`,
		renew:   `UPDATE ` + inst + ` SET lease_until = $1 WHERE owner = $2 AND state IN ('running', 'compensating')`,
		release: `UPDATE ` + inst + ` SET lease_until = 0 WHERE id = $1 AND owner = $2`,
		list:    `SELECT version, owner, lease_until, body FROM ` + inst + ` WHERE ($1 = '' OR name = $1) AND ($2 = '' OR state = $2) ORDER BY created, id LIMIT $3`,
		// One statement claims a new key or takes an expired claim over.
		claim: `INSERT INTO ` + rec + ` AS r (rkey, done, outcome, reply, error, owner, lease_until, updated, runs)
			VALUES ($1, 0, '', '', '', $2, $3, $4, 1)
			ON CONFLICT (rkey) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until, updated = excluded.updated, runs = r.runs + 1
			WHERE r.done = 0 AND r.lease_until <= excluded.updated
			RETURNING runs`,
		renewClaim:   `UPDATE ` + rec + ` SET lease_until = $1 WHERE rkey = $2 AND owner = $3 AND done = 0`,
		claimLoad:    `SELECT done, outcome, reply, error, lease_until, runs FROM ` + rec + ` WHERE rkey = $1`,
		complete:     `UPDATE ` + rec + ` SET done = 1, outcome = $1, reply = $2, error = $3, updated = $4 WHERE rkey = $5 AND owner = $6 AND done = 0`,
		releaseClaim: `DELETE FROM ` + rec + ` WHERE rkey = $1 AND owner = $2 AND done = 0`,
	}
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Create implements saga.Store.
func (s *Store) Create(ctx context.Context, in *saga.Instance) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("sqlstore: create %s: %w", in.ID, err)
	}
	res, err := s.db.ExecContext(ctx, s.q.create, in.ID, in.Name, string(in.State), in.Version,
		nanos(in.WakeAt()), in.Owner, nanos(in.LeaseUntil), nanos(in.Created), string(body))
	if err != nil {
		return fmt.Errorf("sqlstore: create %s: %w", in.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlstore: create %s: %w", in.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlstore: create %s: %w", in.ID, saga.ErrExists)
	}
	return nil
}

// Load implements saga.Store.
func (s *Store) Load(ctx context.Context, id string) (*saga.Instance, error) {
	in, err := scanInstance(s.db.QueryRowContext(ctx, s.q.load, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlstore: load %s: %w", id, saga.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: load %s: %w", id, err)
	}
	return in, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanInstance(row scanner) (*saga.Instance, error) {
	var (
		version, lease int64
		owner, body    string
	)
	if err := row.Scan(&version, &owner, &lease, &body); err != nil {
		return nil, err
	}
	in := new(saga.Instance)
	if err := json.Unmarshal([]byte(body), in); err != nil {
		return nil, err
	}
	in.Version, in.Owner, in.LeaseUntil = version, owner, fromNanos(lease)
	return in, nil
}

// Update implements saga.Store.
func (s *Store) Update(ctx context.Context, in *saga.Instance) error {
	return s.replace(ctx, in, "update", s.q.update, func(body string) []any {
		return []any{string(in.State), in.Version, nanos(in.WakeAt()), in.Owner, nanos(in.LeaseUntil), body, in.ID, in.Version - 1}
	})
}

// RecordRequest implements saga.Store.
func (s *Store) RecordRequest(ctx context.Context, in *saga.Instance) error {
	return s.replace(ctx, in, "record request of", s.q.recordRequest, func(body string) []any {
		return []any{string(in.State), in.Version, nanos(in.WakeAt()), body, in.ID, in.Version - 1}
	})
}

// replace runs query, Update's or RecordRequest's statement (what names it
// in errors), with the arguments args returns for in's body: one statement
// guarded by the stored version.
func (s *Store) replace(ctx context.Context, in *saga.Instance, what, query string, args func(body string) []any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("sqlstore: %s %s: %w", what, in.ID, err)
	}
	res, err := s.db.ExecContext(ctx, query, args(string(body))...)
	if err != nil {
		return fmt.Errorf("sqlstore: %s %s: %w", what, in.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlstore: %s %s: %w", what, in.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlstore: %s %s to version %d: %w", what, in.ID, in.Version, saga.ErrConflict)
	}
	return nil
}

// List implements saga.Store.
func (s *Store) List(ctx context.Context, f saga.ListFilter) ([]*saga.Instance, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, s.q.list, f.Name, string(f.State), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list: %w", err)
	}
	defer rows.Close()
	var out []*saga.Instance
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: list: %w", err)
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list: %w", err)
	}
	return out, nil
}

// Due implements saga.Store.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q.due, now.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: due: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sqlstore: due: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: due: %w", err)
	}
	return ids, nil
}

// RenewLeases implements saga.Store.
func (s *Store) RenewLeases(ctx context.Context, owner string, until time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.q.renew, until.UnixNano(), owner); err != nil {
		return fmt.Errorf("sqlstore: renew leases: %w", err)
	}
	return nil
}

// ReleaseLease implements saga.Store.
func (s *Store) ReleaseLease(ctx context.Context, id, owner string) error {
	if _, err := s.db.ExecContext(ctx, s.q.release, id, owner); err != nil {
		return fmt.Errorf("sqlstore: release lease of %s: %w", id, err)
	}
	return nil
}

// Claim implements saga.Store.
func (s *Store) Claim(ctx context.Context, key, owner string, until time.Time) (*saga.Record, bool, error) {
	var runs int
	err := s.db.QueryRowContext(ctx, s.q.claim, key, owner, until.UnixNano(), time.Now().UnixNano()).Scan(&runs)
	if err == nil {
		return &saga.Record{Key: key, Until: until, Runs: runs}, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("sqlstore: claim %s: %w", key, err)
	}
	rec, err := s.Lookup(ctx, key)
	if err != nil {
		return nil, false, err
	}
	if rec == nil {
		// Released between the statements: the caller tries again later.
		rec = &saga.Record{Key: key}
	}
	return rec, false, nil
}

// Lookup implements saga.Store.
func (s *Store) Lookup(ctx context.Context, key string) (*saga.Record, error) {
	rec := &saga.Record{Key: key}
	var done int
	var reply string
	var until int64
	err := s.db.QueryRowContext(ctx, s.q.claimLoad, key).Scan(&done, &rec.Outcome, &reply, &rec.Error, &until, &rec.Runs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: lookup %s: %w", key, err)
	}
	rec.Done = done == 1
	if !rec.Done {
		rec.Until = fromNanos(until)
	}
	if reply != "" {
		rec.Reply = []byte(reply)
	}
	return rec, nil
}

// RenewClaim implements saga.Store.
func (s *Store) RenewClaim(ctx context.Context, key, owner string, until time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q.renewClaim, until.UnixNano(), key, owner)
	if err != nil {
		return fmt.Errorf("sqlstore: renew claim %s: %w", key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlstore: renew claim %s: %w", key, err)
	} else if n == 0 {
		return fmt.Errorf("sqlstore: renew claim %s: claim lost: %w", key, saga.ErrConflict)
	}
	return nil
}

// Complete implements saga.Store.
func (s *Store) Complete(ctx context.Context, key, owner string, rec *saga.Record) error {
	res, err := s.db.ExecContext(ctx, s.q.complete, rec.Outcome, string(rec.Reply), rec.Error, time.Now().UnixNano(), key, owner)
	if err != nil {
		return fmt.Errorf("sqlstore: complete %s: %w", key, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlstore: complete %s: claim lost: %w", key, saga.ErrConflict)
	}
	return nil
}

// Release implements saga.Store.
func (s *Store) Release(ctx context.Context, key, owner string) error {
	if _, err := s.db.ExecContext(ctx, s.q.releaseClaim, key, owner); err != nil {
		return fmt.Errorf("sqlstore: release %s: %w", key, err)
	}
	return nil
}
