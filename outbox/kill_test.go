package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// runChild runs a relay when the test binary is started as the crash test's
// child, and reports whether it was.
func runChild() bool {
	dsn := os.Getenv("OUTBOX_CHILD_DSN")
	if dsn == "" {
		return false
	}
	dialect, _ := strconv.Atoi(os.Getenv("OUTBOX_CHILD_DIALECT"))
	if err := childRelay(Dialect(dialect), dsn, os.Getenv("OUTBOX_CHILD_PREFIX"), os.Getenv("OUTBOX_CHILD_NATS")); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	return true
}

// slowBus publishes through a bus with a pause, so that the parent kills
// the relay mid-batch.
type slowBus struct{ *eventbus.Bus }

func (s slowBus) PublishEvent(ctx context.Context, m *eventbus.Message) error {
	time.Sleep(2 * time.Millisecond)
	return s.Bus.PublishEvent(ctx, m)
}

func childRelay(dialect Dialect, dsn, prefix, natsURL string) error {
	ctx := context.Background()
	var db *sql.DB
	var err error
	if dialect == SQLite {
		db, err = OpenSQLite(dsn)
	} else {
		db, err = sql.Open("pgx", dsn)
	}
	if err != nil {
		return err
	}
	o, err := New(ctx, db, dialect, &Options{TablePrefix: prefix})
	if err != nil {
		return err
	}
	drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{natsURL}})
	if err != nil {
		return err
	}
	bus := eventbus.New(&eventbus.Options{Source: "shop"})
	_ = bus.Register("nats", drv)
	if err := bus.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	return o.Relay(slowBus{bus}, &RelayOptions{Lease: 2 * time.Second, BatchSize: 50}).Run(ctx)
}

// TestRelayKilled SIGKILLs a relay running in a child process mid-batch; a
// relay started afterwards publishes what it left once its leases passed.
// Nothing is lost; the figures show the duplicates (at least once).
func TestRelayKilled(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		prefix := "outbox_"
		if d.opts != nil {
			prefix = d.opts.TablePrefix
		}
		o, err := New(ctx, d.db, d.dialect, d.opts)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
		drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
		if err != nil {
			t.Fatal(err)
		}
		bus := eventbus.New(&eventbus.Options{Source: "shop"})
		_ = bus.Register("nats", drv)
		var mu sync.Mutex
		times := map[string]int{}
		last := map[string]int{}
		var disorder []string
		_, _ = bus.SubscribeEvents(ctx, []string{"order.placed"}, "billing", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			var seq int
			fmt.Sscan(string(m.Data), &seq)
			mu.Lock()
			defer mu.Unlock()
			// A duplicate may repeat an earlier message; a first
			// delivery must not come before an earlier one of its key.
			if times[m.ID] == 0 && seq < last[m.Key] {
				disorder = append(disorder, fmt.Sprintf("%s: %d after %d", m.Key, seq, last[m.Key]))
			}
			times[m.ID]++
			last[m.Key] = max(last[m.Key], seq)
			return nil
		}), eventbus.WithConcurrency(1))
		if err := bus.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bus.Close(context.Background()) })
		distinct := func() int { mu.Lock(); defer mu.Unlock(); return len(times) }

		const n = 300
		enqueueOrders(t, d, o, 0, n, func(i int) string { return fmt.Sprint("k", i%5) })

		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OUTBOX_CHILD_DSN="+d.dsn, "OUTBOX_CHILD_DIALECT="+strconv.Itoa(int(d.dialect)),
			"OUTBOX_CHILD_PREFIX="+prefix, "OUTBOX_CHILD_NATS="+srv.ClientURL())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the child to publish", func() bool { return distinct() >= 60 })
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		killedAt, atKill := time.Now(), distinct()
		if atKill >= n {
			t.Fatalf("the child published all %d before it was killed; slow it down", n)
		}

		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = o.Relay(bus, &RelayOptions{PollInterval: 20 * time.Millisecond}).Run(rctx)
		}()
		waitFor(t, "every message", func() bool { return distinct() == n })
		recovery := time.Since(killedAt)
		stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		delivered, dup := 0, 0
		for _, k := range times {
			delivered += k
			dup += k - 1
		}
		t.Logf("%s: enqueued %d, delivered %d (%d before the kill), lost %d, duplicated %d, recovered in %v",
			d.dialect, n, delivered, atKill, n-len(times), dup, recovery.Round(time.Millisecond))
		for _, e := range disorder {
			t.Error("out of order:", e)
		}
		if st, _ := o.Stats(ctx); st.Pending != 0 {
			t.Errorf("%d rows pending", st.Pending)
		}
	})
}
