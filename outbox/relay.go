package outbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
)

// Publisher publishes what a Relay takes from the outbox; *eventbus.Bus is
// one.
type Publisher interface {
	PublishEvent(ctx context.Context, m *eventbus.Message) error
	SendCommand(ctx context.Context, service string, m *eventbus.Message) error
	Broadcast(ctx context.Context, m *eventbus.Message) error
	PublishStream(ctx context.Context, stream string, msgs ...*eventbus.Message) error
}

// RelayOptions configures a Relay. The zero value is the documented default.
type RelayOptions struct {
	// Lease is how long a relay holds the rows it claimed: another relay
	// takes them over only after it passed (after a crash, for instance).
	// A relay stops publishing a claim when less than a fifth of its
	// lease is left. Default 30s.
	Lease time.Duration
	// BatchSize bounds the rows claimed at once. Default 100.
	BatchSize int
	// PollInterval is the wait between claims when the outbox was found
	// empty. Default 200ms.
	PollInterval time.Duration
	// Concurrency bounds the ordering groups (destination and Key)
	// published at once. Default 8.
	Concurrency int
	// MaxBackoff caps the exponentially growing wait (from 100ms) before a
	// row whose publication failed is tried again. Default 30s.
	MaxBackoff time.Duration
	// Logger receives errors and set-aside messages. nil discards them.
	Logger *slog.Logger
}

// Relay publishes the outbox's messages through a Publisher. Run several,
// in one process or many, on one outbox: each group's messages are
// published by one relay at a time, in order.
type Relay struct {
	o     *Outbox
	pub   Publisher
	opts  RelayOptions
	owner string
	log   *slog.Logger
	// afterPublish, when set (tests), runs after each successful publish,
	// before the row is removed.
	afterPublish func(m *eventbus.Message)
}

// Relay returns a relay that publishes the outbox's messages through pub.
// opts may be nil.
func (o *Outbox) Relay(pub Publisher, opts *RelayOptions) *Relay {
	var ro RelayOptions
	if opts != nil {
		ro = *opts
	}
	if ro.Lease <= 0 {
		ro.Lease = 30 * time.Second
	}
	if ro.BatchSize <= 0 {
		ro.BatchSize = 100
	}
	if ro.PollInterval <= 0 {
		ro.PollInterval = 200 * time.Millisecond
	}
	if ro.Concurrency <= 0 {
		ro.Concurrency = 8
	}
	if ro.MaxBackoff <= 0 {
		ro.MaxBackoff = 30 * time.Second
	}
	log := ro.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Relay{o: o, pub: pub, opts: ro, owner: hex.EncodeToString(b[:]), log: log}
}

// Run publishes until ctx ends, then gives back what it claimed and did not
// publish, and returns nil. Database errors are logged and retried after
// PollInterval.
func (r *Relay) Run(ctx context.Context) error {
	for {
		n, err := r.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.log.Warn("outbox: relay pass failed", "error", err)
		}
		if n < r.opts.BatchSize || err != nil {
			t := time.NewTimer(r.opts.PollInterval)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
		}
	}
}

type claimed struct {
	seq      int64
	okey     string
	attempts int
	rec      record
	bad      error // the body could not be read
}

// RunOnce claims one batch, publishes it and removes what was published. It
// returns the number of rows claimed.
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	start := time.Now()
	rows, err := r.claim(ctx, start)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	// Publish until a fifth of the lease is left, so that no other relay
	// takes a row over while this one may still be publishing it.
	pctx, cancel := context.WithDeadline(ctx, start.Add(r.opts.Lease-r.opts.Lease/5))
	defer cancel()
	groups := map[string][]claimed{}
	var order []string
	for _, c := range rows {
		if _, ok := groups[c.okey]; !ok {
			order = append(order, c.okey)
		}
		groups[c.okey] = append(groups[c.okey], c)
	}
	sem := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, k := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.publishGroup(pctx, ctx.Done(), start.Add(r.opts.Lease), groups[k]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return len(rows), errors.Join(errs...)
}

func (r *Relay) claim(ctx context.Context, now time.Time) ([]claimed, error) {
	tx, err := r.o.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	defer tx.Rollback()
	if r.o.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID("claim/"+r.o.prefix)); err != nil {
			return nil, fmt.Errorf("outbox: claim: %w", err)
		}
	}
	rows, err := tx.QueryContext(ctx, r.o.q.claim, r.owner, now.Add(r.opts.Lease).UnixNano(), now.UnixNano(), r.opts.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	var out []claimed
	for rows.Next() {
		var c claimed
		var pattern int
		var body string
		if err := rows.Scan(&c.seq, &c.okey, &pattern, &c.rec.Target, &body, &c.attempts); err != nil {
			rows.Close()
			return nil, fmt.Errorf("outbox: claim: %w", err)
		}
		c.rec.Pattern = eventbus.Pattern(pattern)
		c.rec.Message = new(eventbus.Message)
		if err := json.Unmarshal([]byte(body), c.rec.Message); err != nil {
			c.bad = fmt.Errorf("%w: stored message: %w", eventbus.ErrMalformed, err)
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	slices.SortFunc(out, func(a, b claimed) int { return cmp.Compare(a.seq, b.seq) })
	return out, nil
}

// refused reports whether the bus refused a message for good: publishing
// it again cannot succeed.
func refused(err error) bool {
	return errors.Is(err, eventbus.ErrTooLarge) || errors.Is(err, eventbus.ErrInvalid) ||
		errors.Is(err, eventbus.ErrMalformed) || errors.Is(err, eventbus.ErrInvalidName)
}

// publishGroup publishes one group's rows in order and settles each row:
// removed once published, set aside when refused for good; on the first
// other failure the rest of the group waits a backoff, and on the end of
// ctx it is given back.
func (r *Relay) publishGroup(ctx context.Context, stop <-chan struct{}, leaseEnd time.Time, rows []claimed) error {
	// Settling outlives ctx: a row published and not removed is published
	// again after its lease (a duplicate, never a loss), so keep trying to
	// remove it while the lease lasts — a busy database (SQLite's one
	// writer, under load) is no reason to publish a message twice.
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), leaseEnd)
	defer cancel()
	for i, c := range rows {
		err := c.bad
		if err == nil {
			if ctx.Err() != nil {
				return r.settle(sctx, stop, rows[i:], r.o.q.release, nil)
			}
			err = r.publish(ctx, c.rec)
			if errors.Is(err, eventbus.ErrDuplicate) {
				err = nil // published before, the broker says
			}
		}
		switch {
		case err == nil:
			if r.afterPublish != nil {
				r.afterPublish(c.rec.Message)
			}
			if err := r.exec(sctx, stop, r.o.q.remove, r.owner, c.seq); err != nil {
				return fmt.Errorf("outbox: remove %d (it will be published again): %w", c.seq, err)
			}
		case refused(err):
			r.log.Error("outbox: message set aside: the bus refuses it", "id", c.rec.Message.ID, "seq", c.seq, "error", err)
			if err2 := r.exec(sctx, stop, r.o.q.dead, err.Error(), r.owner, c.seq); err2 != nil {
				return fmt.Errorf("outbox: set aside %d: %w", c.seq, err2)
			}
		case ctx.Err() != nil:
			return r.settle(sctx, stop, rows[i:], r.o.q.release, nil)
		default:
			wait := backoff(c.attempts, r.opts.MaxBackoff)
			r.log.Warn("outbox: publish failed; the message and those after it wait", "id", c.rec.Message.ID, "seq", c.seq, "attempt", c.attempts, "wait", wait, "error", err)
			until := time.Now().Add(wait).UnixNano()
			if serr := r.settle(sctx, stop, rows[i:], r.o.q.backoff, []any{until, err.Error()}); serr != nil {
				return serr
			}
			return fmt.Errorf("outbox: publish %s: %w", c.rec.Message.ID, err)
		}
	}
	return nil
}

// settleAfterStop bounds how long a relay that is being stopped keeps
// trying to settle rows the database refuses: the rest is left to the lease.
const settleAfterStop = 3 * time.Second

// exec runs a settling statement, trying again as retry says.
func (r *Relay) exec(ctx context.Context, stop <-chan struct{}, stmt string, args ...any) error {
	return r.retry(ctx, stop, func() error {
		_, err := r.o.db.ExecContext(ctx, stmt, args...)
		return err
	})
}

// settle runs stmt (with args, then owner and seq) on each row, in one
// transaction, trying again as retry says.
func (r *Relay) settle(ctx context.Context, stop <-chan struct{}, rows []claimed, stmt string, args []any) error {
	return r.retry(ctx, stop, func() error { return r.settleOnce(ctx, rows, stmt, args) })
}

// retry runs a settling operation until it succeeds or ctx ends (the
// claim's lease: the rows stay this relay's until then, so settling them
// late is still right), with a backoff of up to a second between tries.
// Once stop is closed (the relay is being stopped) it tries for at most
// settleAfterStop more, so that stopping does not wait for the lease.
func (r *Relay) retry(ctx context.Context, stop <-chan struct{}, op func() error) error {
	var stopped time.Time
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-stop:
			if stopped.IsZero() {
				stopped = time.Now()
			} else if time.Since(stopped) > settleAfterStop {
				return err
			}
		default:
		}
		r.log.Warn("outbox: settling failed; trying again", "attempt", attempt, "error", err)
		t := time.NewTimer(backoff(attempt, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (r *Relay) settleOnce(ctx context.Context, rows []claimed, stmt string, args []any) error {
	tx, err := r.o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: settle: %w", err)
	}
	defer tx.Rollback()
	for _, c := range rows {
		if _, err := tx.ExecContext(ctx, stmt, append(slices.Clip(args), r.owner, c.seq)...); err != nil {
			return fmt.Errorf("outbox: settle %d: %w", c.seq, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: settle: %w", err)
	}
	return nil
}

func backoff(attempt int, maxWait time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

func (r *Relay) publish(ctx context.Context, rec record) error {
	m := rec.Message
	switch rec.Pattern {
	case eventbus.EventPattern:
		return r.pub.PublishEvent(ctx, m)
	case eventbus.CommandPattern:
		return r.pub.SendCommand(ctx, rec.Target, m)
	case eventbus.BroadcastPattern:
		return r.pub.Broadcast(ctx, m)
	case eventbus.StreamPattern:
		return r.pub.PublishStream(ctx, rec.Target, m)
	}
	return fmt.Errorf("%w: pattern %d in the outbox", eventbus.ErrMalformed, rec.Pattern)
}

var _ Publisher = (*eventbus.Bus)(nil)

var _ Execer = (*sql.Tx)(nil)
