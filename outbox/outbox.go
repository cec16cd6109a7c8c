package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"github.com/marty-msf/eventbus"
)

// Dialect names the SQL database behind a *sql.DB.
type Dialect int

// The supported databases.
const (
	// Postgres is PostgreSQL through pgx's database/sql driver ("pgx").
	Postgres Dialect = iota + 1
	// SQLite is SQLite through modernc.org/sqlite ("sqlite"); open it
	// with OpenSQLite.
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// OpenSQLite opens (creating it when missing) the SQLite database file at
// path the way the outbox and inbox need it: WAL mode, a busy timeout,
// transactions that take the write lock when they begin, and one
// connection, so that writers queue in the process instead of failing with
// SQLITE_BUSY. Business code uses the same handle for its transactions.
func OpenSQLite(path string) (*sql.DB, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("outbox: open sqlite %q: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// Options configures New and NewInbox. nil means defaults.
type Options struct {
	// TablePrefix names the tables (<prefix>messages, <prefix>inbox):
	// letters, digits and '_'. Default "outbox_".
	TablePrefix string
}

// Execer runs a statement: *sql.Tx, *sql.Conn and *sql.DB are Execers.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Outbox stores messages in the database, in the caller's transaction, for
// a Relay to publish after commit. It is safe for concurrent use.
type Outbox struct {
	db      *sql.DB
	dialect Dialect
	prefix  string
	q       queries
}

// New returns the outbox in db, creating its table when missing (safe from
// several processes at once). db stays the caller's; New does not close it.
func New(ctx context.Context, db *sql.DB, dialect Dialect, opts *Options) (*Outbox, error) {
	prefix, err := tablePrefix(opts)
	if err != nil {
		return nil, err
	}
	q := newQueries(prefix, dialect)
	if err := migrate(ctx, db, dialect, prefix, q.schema); err != nil {
		return nil, err
	}
	return &Outbox{db: db, dialect: dialect, prefix: prefix, q: q}, nil
}

func tablePrefix(opts *Options) (string, error) {
	prefix := "outbox_"
	if opts != nil && opts.TablePrefix != "" {
		prefix = opts.TablePrefix
	}
	for _, c := range prefix {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return "", fmt.Errorf("outbox: table prefix %q: only lower-case letters, digits and '_' allowed", prefix)
		}
	}
	return prefix, nil
}

func migrate(ctx context.Context, db *sql.DB, dialect Dialect, prefix string, schema []string) error {
	if dialect != Postgres && dialect != SQLite {
		return fmt.Errorf("outbox: unknown %v", dialect)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	defer tx.Rollback()
	if dialect == Postgres {
		// Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID("migrate/"+prefix)); err != nil {
			return fmt.Errorf("outbox: migrate: %w", err)
		}
	}
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("outbox: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return nil
}

func lockID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("eventbus/outbox/" + name))
	return int64(h.Sum64())
}

// PublishEvent stores m for publication to events.<m.Type>, in tx.
func (o *Outbox) PublishEvent(ctx context.Context, tx Execer, m *eventbus.Message) error {
	return o.enqueue(ctx, tx, eventbus.EventPattern, "", m)
}

// SendCommand stores m for sending to commands.<service>.<m.Type>, in tx.
func (o *Outbox) SendCommand(ctx context.Context, tx Execer, service string, m *eventbus.Message) error {
	if service == "" {
		return errors.New("outbox: send command: no service")
	}
	return o.enqueue(ctx, tx, eventbus.CommandPattern, service, m)
}

// Broadcast stores m for broadcast to broadcast.<m.Type>, in tx.
func (o *Outbox) Broadcast(ctx context.Context, tx Execer, m *eventbus.Message) error {
	return o.enqueue(ctx, tx, eventbus.BroadcastPattern, "", m)
}

// PublishStream stores msgs for appending to streams.<stream>, in tx.
func (o *Outbox) PublishStream(ctx context.Context, tx Execer, stream string, msgs ...*eventbus.Message) error {
	if stream == "" {
		return errors.New("outbox: publish stream: no stream")
	}
	for _, m := range msgs {
		if err := o.enqueue(ctx, tx, eventbus.StreamPattern, stream, m); err != nil {
			return err
		}
	}
	return nil
}

// record is a message as the outbox stores it.
type record struct {
	Pattern eventbus.Pattern
	Target  string
	Message *eventbus.Message
}

// orderKey groups the messages published in order: one destination and one
// Key.
func orderKey(p eventbus.Pattern, target string, m *eventbus.Message) string {
	return fmt.Sprintf("%d\x1f%s\x1f%s\x1f%s", p, target, m.Type, m.Key)
}

func (o *Outbox) enqueue(ctx context.Context, tx Execer, p eventbus.Pattern, target string, m *eventbus.Message) error {
	if m == nil || m.Type == "" {
		return errors.New("outbox: enqueue: a message needs a Type")
	}
	// The id and time are fixed now, so that every publication of this
	// row (at least once) carries the same ones and consumers deduplicate.
	if m.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		m.ID = hex.EncodeToString(b[:])
	}
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("outbox: enqueue %s: %w", m.ID, err)
	}
	if _, err := tx.ExecContext(ctx, o.q.enqueue, orderKey(p, target, m), int(p), target, string(body), time.Now().UnixNano()); err != nil {
		return fmt.Errorf("outbox: enqueue %s: %w", m.ID, err)
	}
	return nil
}

// Stats counts the outbox's rows.
type Stats struct {
	// Pending counts messages not yet published.
	Pending int
	// Dead counts messages set aside because the bus refused them for
	// good (too large, invalid); they stay for inspection.
	Dead int
}

// Stats counts the rows of the outbox.
func (o *Outbox) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	if err := o.db.QueryRowContext(ctx, o.q.stats).Scan(&s.Pending, &s.Dead); err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	return s, nil
}

type queries struct {
	schema                []string
	enqueue, claim, stats string
	remove, backoff, dead string
	release               string
	record, expire        string
	inbox                 string
}

func (q queries) inboxTable() string { return q.inbox }

func newQueries(p string, d Dialect) queries {
	msgs, inbox := p+"messages", p+"inbox"
	seq, skipLocked := "seq BIGSERIAL PRIMARY KEY", " FOR UPDATE OF o SKIP LOCKED"
	if d == SQLite {
		seq, skipLocked = "seq INTEGER PRIMARY KEY AUTOINCREMENT", ""
	}
	return queries{
		schema: []string{
			`CREATE TABLE IF NOT EXISTS ` + msgs + ` (
				` + seq + `,
				okey TEXT NOT NULL,
				pattern INTEGER NOT NULL,
				target TEXT NOT NULL,
				body TEXT NOT NULL,
				created BIGINT NOT NULL,
				owner TEXT NOT NULL DEFAULT '',
				lease_until BIGINT NOT NULL DEFAULT 0,
				attempts INTEGER NOT NULL DEFAULT 0,
				dead INTEGER NOT NULL DEFAULT 0,
				error TEXT NOT NULL DEFAULT '')`,
			`CREATE INDEX IF NOT EXISTS ` + msgs + `_okey ON ` + msgs + ` (okey, lease_until)`,
			`CREATE TABLE IF NOT EXISTS ` + inbox + ` (
				consumer TEXT NOT NULL,
				source TEXT NOT NULL,
				id TEXT NOT NULL,
				processed BIGINT NOT NULL,
				PRIMARY KEY (consumer, source, id))`,
			`CREATE INDEX IF NOT EXISTS ` + inbox + `_processed ON ` + inbox + ` (processed)`,
		},
		enqueue: `INSERT INTO ` + msgs + ` (okey, pattern, target, body, created) VALUES ($1, $2, $3, $4, $5)`,
		// Claim the oldest live rows of every group that no relay holds
		// (no live row of the group under a lease): a group's claimed rows
		// are always the head of its queue, so a group is published by one
		// relay at a time, in order. Claims are serialized (an advisory
		// lock on PostgreSQL, the write lock on SQLite) so that each sees
		// the leases committed before it.
		claim: `UPDATE ` + msgs + ` SET owner = $1, lease_until = $2, attempts = attempts + 1
			WHERE seq IN (
				SELECT o.seq FROM ` + msgs + ` o
				WHERE o.dead = 0 AND o.lease_until <= $3
				AND NOT EXISTS (SELECT 1 FROM ` + msgs + ` l WHERE l.okey = o.okey AND l.dead = 0 AND l.lease_until > $3)
				ORDER BY o.seq LIMIT $4` + skipLocked + `)
			RETURNING seq, okey, pattern, target, body, attempts`,
		stats:   `SELECT COALESCE(SUM(CASE WHEN dead = 0 THEN 1 ELSE 0 END), 0), COALESCE(SUM(dead), 0) FROM ` + msgs,
		remove:  `DELETE FROM ` + msgs + ` WHERE owner = $1 AND seq = $2`,
		backoff: `UPDATE ` + msgs + ` SET owner = '', lease_until = $1, error = $2 WHERE owner = $3 AND seq = $4`,
		dead:    `UPDATE ` + msgs + ` SET owner = '', lease_until = 0, dead = 1, error = $1 WHERE owner = $2 AND seq = $3`,
		release: `UPDATE ` + msgs + ` SET owner = '', lease_until = 0 WHERE owner = $1 AND seq = $2`,
		record:  `INSERT INTO ` + inbox + ` (consumer, source, id, processed) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		inbox:   inbox,
		expire:  `DELETE FROM ` + inbox + ` WHERE consumer = $1 AND processed < $2`,
	}
}
