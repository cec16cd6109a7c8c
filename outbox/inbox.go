package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
)

// InboxOptions configures NewInbox. The zero value is the documented
// default.
type InboxOptions struct {
	Options
	// Consumer names the handler whose processing the inbox records: each
	// consumer processes a message once. Default "".
	Consumer string
	// TTL is how long a processed (source, id) is remembered. A message
	// redelivered after that is processed again: keep it well above the
	// longest time the backend may take to redeliver (its retention for a
	// replay). Default 7 days.
	TTL time.Duration
}

// Inbox records the messages a consumer processed, in the same transaction
// as the consumer's own writes, so that each message is processed exactly
// once however often it is delivered. It is safe for concurrent use.
type Inbox struct {
	db       *sql.DB
	consumer string
	ttl      time.Duration
	q        queries

	mu          sync.Mutex
	lastExpired time.Time
}

// NewInbox returns the inbox in db, creating its table when missing. db
// stays the caller's.
func NewInbox(ctx context.Context, db *sql.DB, dialect Dialect, opts *InboxOptions) (*Inbox, error) {
	var o InboxOptions
	if opts != nil {
		o = *opts
	}
	if o.TTL <= 0 {
		o.TTL = 7 * 24 * time.Hour
	}
	prefix, err := tablePrefix(&o.Options)
	if err != nil {
		return nil, err
	}
	q := newQueries(prefix, dialect)
	if err := migrate(ctx, db, dialect, prefix, q.schema); err != nil {
		return nil, err
	}
	return &Inbox{db: db, consumer: o.Consumer, ttl: o.TTL, q: q, lastExpired: time.Now()}, nil
}

// Record records m's (source, id) as processed in tx and reports whether it
// is the first time: false means a transaction that committed before
// recorded it, and the caller rolls back and acknowledges. On PostgreSQL a
// second transaction recording the same message waits for the first to
// end; on SQLite transactions run one at a time.
func (in *Inbox) Record(ctx context.Context, tx *sql.Tx, m *eventbus.Message) (bool, error) {
	res, err := tx.ExecContext(ctx, in.q.record, in.consumer, m.Source, m.ID, time.Now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("outbox: inbox record %s: %w", m.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox: inbox record %s: %w", m.ID, err)
	}
	return n == 1, nil
}

// TxHandler processes a message inside the inbox's transaction: its writes
// go through tx (on SQLite, never through the *sql.DB, whose one
// connection tx holds) and commit with the inbox record, or not at all. It
// may enqueue outgoing messages with an Outbox on tx.
type TxHandler func(ctx context.Context, tx *sql.Tx, m *eventbus.Message) error

// Handler returns a handler that runs h exactly once per (source, id): it
// begins a transaction, records the message, runs h and commits. A
// duplicate is acknowledged without running h; an error from h rolls back
// and is returned to the bus (which redelivers or dead-letters). Now and
// then, after a commit, it removes the entries older than the TTL.
func (in *Inbox) Handler(h TxHandler) eventbus.Handler {
	return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		tx, err := in.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("outbox: inbox begin: %w", err)
		}
		defer tx.Rollback()
		first, err := in.Record(ctx, tx, m)
		if err != nil || !first {
			return err
		}
		if err := h(ctx, tx, m); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("outbox: inbox commit %s: %w", m.ID, err)
		}
		in.expireSometimes(ctx)
		return nil
	})
}

// expireSometimes runs Expire at most once per tenth of the TTL.
func (in *Inbox) expireSometimes(ctx context.Context) {
	in.mu.Lock()
	due := time.Since(in.lastExpired) >= in.ttl/10
	if due {
		in.lastExpired = time.Now()
	}
	in.mu.Unlock()
	if due {
		_, _ = in.Expire(ctx)
	}
}

// Expire removes the entries recorded more than the TTL ago and returns
// how many it removed.
func (in *Inbox) Expire(ctx context.Context) (int64, error) {
	res, err := in.db.ExecContext(ctx, in.q.expire, in.consumer, time.Now().Add(-in.ttl).UnixNano())
	if err != nil {
		return 0, fmt.Errorf("outbox: inbox expire: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
