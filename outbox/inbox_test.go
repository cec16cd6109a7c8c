package outbox

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
)

func TestInboxProcessesOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		in, err := NewInbox(ctx, d.db, d.dialect, &InboxOptions{Options: optsOf(d), Consumer: "billing"})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := New(ctx, d.db, d.dialect, d.opts)
		fail := true
		var calls int
		var mu sync.Mutex
		h := in.Handler(func(ctx context.Context, tx *sql.Tx, m *eventbus.Message) error {
			mu.Lock()
			calls++
			mu.Unlock()
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+d.orders()+` (id) VALUES ($1)`, m.ID); err != nil {
				return err
			}
			if err := out.PublishEvent(ctx, tx, &eventbus.Message{Type: "order.billed"}); err != nil {
				return err
			}
			if fail {
				return errors.New("downstream")
			}
			return nil
		})
		m := &eventbus.Message{Source: "shop", ID: "o-1", Type: "order.placed"}
		if err := h.Handle(ctx, m); err == nil {
			t.Fatal("want the handler's error")
		}
		// The failure rolled back the record, the order and the outbox row.
		if count(t, d.db, d.orders()) != 0 || count(t, d.db, in.q.inboxTable()) != 0 || count(t, d.db, out.prefix+"messages") != 0 {
			t.Fatal("a failed handler left writes")
		}
		fail = false
		var wg sync.WaitGroup
		for range 4 { // redeliveries, some at once
			wg.Go(func() {
				if err := h.Handle(ctx, m); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if calls != 2 || count(t, d.db, d.orders()) != 1 || count(t, d.db, out.prefix+"messages") != 1 {
			t.Errorf("calls %d, orders %d, outgoing %d; want 2, 1, 1", calls, count(t, d.db, d.orders()), count(t, d.db, out.prefix+"messages"))
		}
		// Another consumer processes the same message once too.
		other, _ := NewInbox(ctx, d.db, d.dialect, &InboxOptions{Options: optsOf(d), Consumer: "mail"})
		tx, _ := d.db.BeginTx(ctx, nil)
		first, err := other.Record(ctx, tx, m)
		_ = tx.Commit()
		if !first || err != nil {
			t.Errorf("other consumer: first %v, %v", first, err)
		}
	})
}

func TestInboxExpires(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		in, _ := NewInbox(ctx, d.db, d.dialect, &InboxOptions{Options: optsOf(d), TTL: 50 * time.Millisecond})
		keep, _ := NewInbox(ctx, d.db, d.dialect, &InboxOptions{Options: optsOf(d), Consumer: "other"})
		var calls int
		h := in.Handler(func(ctx context.Context, tx *sql.Tx, m *eventbus.Message) error { calls++; return nil })
		m := &eventbus.Message{Source: "s", ID: "x"}
		_ = h.Handle(ctx, m)
		_ = keep.Handler(func(ctx context.Context, tx *sql.Tx, m *eventbus.Message) error { return nil }).Handle(ctx, m)
		waitFor(t, "expiry", func() bool { n, _ := in.Expire(ctx); return n == 1 })
		_ = h.Handle(ctx, m)
		if calls != 2 {
			t.Errorf("%d calls, want 2: an expired entry is forgotten", calls)
		}
		if n := count(t, d.db, in.q.inboxTable()); n != 2 {
			t.Errorf("%d entries, want 2 (the other consumer's kept)", n)
		}
	})
}

func optsOf(d testDB) Options {
	if d.opts == nil {
		return Options{}
	}
	return *d.opts
}
