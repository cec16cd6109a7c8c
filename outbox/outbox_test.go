package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/membus"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// testDB is one database a test runs on.
type testDB struct {
	db      *sql.DB
	dialect Dialect
	dsn     string // the SQLite path or the PostgreSQL URL
	opts    *Options
}

func (d testDB) open(t *testing.T) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if d.dialect == SQLite {
		db, err = OpenSQLite(d.dsn)
	} else {
		db, err = sql.Open("pgx", d.dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func forEachDB(t *testing.T, fn func(t *testing.T, d testDB)) {
	t.Run("sqlite", func(t *testing.T) {
		d := testDB{dialect: SQLite, dsn: filepath.Join(t.TempDir(), "o.db")}
		d.db = d.open(t)
		mustExec(t, d.db, `CREATE TABLE orders (id TEXT PRIMARY KEY)`)
		fn(t, d)
	})
	t.Run("postgres", func(t *testing.T) {
		prefix := fmt.Sprintf("ob%d_", time.Now().UnixNano()%1e9)
		d := testDB{dialect: Postgres, dsn: testenv.DatabaseURL(t), opts: &Options{TablePrefix: prefix}}
		d.db = d.open(t)
		mustExec(t, d.db, `CREATE TABLE `+prefix+`orders (id TEXT PRIMARY KEY)`)
		t.Cleanup(func() {
			for _, tbl := range []string{"messages", "inbox", "orders"} {
				_, _ = d.db.Exec(`DROP TABLE IF EXISTS ` + prefix + tbl)
			}
		})
		fn(t, d)
	})
}

// orders is the business table of the test database.
func (d testDB) orders() string {
	if d.opts != nil {
		return d.opts.TablePrefix + "orders"
	}
	return "orders"
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// enqueueOrders writes n orders, each with its event (Key by key(i)), one
// transaction per order.
func enqueueOrders(t *testing.T, d testDB, o *Outbox, from, n int, key func(int) string) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("o-%04d", i)
		if _, err := tx.Exec(`INSERT INTO `+d.orders()+` (id) VALUES ($1)`, id); err != nil {
			t.Fatal(err)
		}
		if err := o.PublishEvent(ctx, tx, &eventbus.Message{ID: id, Type: "order.placed", Key: key(i), Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRelayPublishesAfterCommit(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		o, err := New(ctx, d.db, d.dialect, d.opts)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *eventbus.Message, 100)
		bus := eventbus.New(&eventbus.Options{Source: "shop"})
		_ = bus.Register("mem", membus.New(nil))
		_, _ = bus.SubscribeEvents(ctx, []string{"order.placed", "order.cancelled"}, "billing", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			got <- m
			return nil
		}))
		_, _ = bus.HandleCommand(ctx, "payments", "charge", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			got <- m
			return nil
		}))
		if err := bus.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer bus.Close(ctx)

		// A rolled-back transaction publishes nothing.
		tx, _ := d.db.BeginTx(ctx, nil)
		_, _ = tx.Exec(`INSERT INTO ` + d.orders() + ` (id) VALUES ('o-x')`)
		_ = o.PublishEvent(ctx, tx, &eventbus.Message{Type: "order.cancelled"})
		_ = tx.Rollback()

		tx, _ = d.db.BeginTx(ctx, nil)
		_, _ = tx.Exec(`INSERT INTO ` + d.orders() + ` (id) VALUES ('o-1')`)
		ev := &eventbus.Message{Type: "order.placed", Key: "o-1", Header: map[string][]string{"h": {"v"}}, Data: []byte(`{"total":5}`)}
		if err := o.PublishEvent(ctx, tx, ev); err != nil {
			t.Fatal(err)
		}
		if err := o.SendCommand(ctx, tx, "payments", &eventbus.Message{Type: "charge", Data: []byte(`5`)}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if st, _ := o.Stats(ctx); st.Pending != 2 {
			t.Errorf("pending %d, want 2", st.Pending)
		}
		r := o.Relay(bus, nil)
		if n, err := r.RunOnce(ctx); n != 2 || err != nil {
			t.Fatalf("RunOnce: %d, %v", n, err)
		}
		a, b := <-got, <-got
		if a.Type == "charge" {
			a, b = b, a
		}
		if a.ID != ev.ID || a.Source != "shop" || string(a.Data) != `{"total":5}` || a.Header["h"][0] != "v" || !a.Time.Equal(ev.Time) {
			t.Errorf("event arrived as %+v, enqueued as %+v", a, ev)
		}
		if b.Type != "charge" || string(b.Data) != "5" {
			t.Errorf("command arrived as %+v", b)
		}
		if st, _ := o.Stats(ctx); st.Pending != 0 || count(t, d.db, o.prefix+"messages") != 0 {
			t.Errorf("published rows left: %+v", st)
		}
		select {
		case m := <-got:
			t.Errorf("unexpected %s", m.Type)
		default:
		}
	})
}

// checker is a Publisher that fails now and then and records what it
// published: each id's publications, any concurrent publication of one id,
// and each key's order.
type checker struct {
	failRate float64
	mu       sync.Mutex
	inFlight map[string]bool
	times    map[string]int
	lastSeq  map[string]int
	errs     []string
	total    atomic.Int64
}

func newChecker(failRate float64) *checker {
	return &checker{failRate: failRate, inFlight: map[string]bool{}, times: map[string]int{}, lastSeq: map[string]int{}}
}

func (c *checker) PublishEvent(ctx context.Context, m *eventbus.Message) error {
	c.mu.Lock()
	if c.inFlight[m.ID] {
		c.errs = append(c.errs, "concurrent publication of "+m.ID)
	}
	c.inFlight[m.ID] = true
	c.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	var seq int
	fmt.Sscan(string(m.Data), &seq)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inFlight, m.ID)
	if rand.Float64() < c.failRate {
		return errors.New("broker hiccup")
	}
	if last, ok := c.lastSeq[m.Key]; ok && seq < last {
		c.errs = append(c.errs, fmt.Sprintf("key %s: %d published after %d", m.Key, seq, last))
	}
	c.lastSeq[m.Key] = seq
	c.times[m.ID]++
	c.total.Add(1)
	return nil
}
func (c *checker) SendCommand(ctx context.Context, s string, m *eventbus.Message) error {
	return c.PublishEvent(ctx, m)
}
func (c *checker) Broadcast(ctx context.Context, m *eventbus.Message) error {
	return c.PublishEvent(ctx, m)
}
func (c *checker) PublishStream(ctx context.Context, s string, ms ...*eventbus.Message) error {
	return c.PublishEvent(ctx, ms[0])
}

// report checks and prints the figures: every id published, none twice
// unless allowDup, none concurrently, each key in order.
func (c *checker) report(t *testing.T, n int, allowDup bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	lost, dup := 0, 0
	for i := range n {
		switch k := c.times[fmt.Sprintf("o-%04d", i)]; {
		case k == 0:
			lost++
		case k > 1:
			dup += k - 1
		}
	}
	t.Logf("enqueued %d, published %d, lost %d, duplicated %d", n, c.total.Load(), lost, dup)
	if lost != 0 || (dup != 0 && !allowDup) {
		t.Errorf("lost %d, duplicated %d", lost, dup)
	}
	for _, e := range c.errs {
		t.Error(e)
	}
}

func TestRelaysShareWork(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		o, err := New(ctx, d.db, d.dialect, d.opts)
		if err != nil {
			t.Fatal(err)
		}
		const n = 400
		pub := newChecker(0.05)
		var wg sync.WaitGroup
		for range 3 {
			db := d.open(t) // each relay its own handle, as separate processes have
			ro, err := New(ctx, db, d.dialect, d.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := ro.Relay(pub, &RelayOptions{BatchSize: 16, PollInterval: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Concurrency: 4})
			wg.Go(func() { _ = r.Run(ctx) })
		}
		start := time.Now()
		enqueueOrders(t, d, o, 0, n, func(i int) string { return fmt.Sprint("k", i%7) })
		waitFor(t, "all published", func() bool { st, _ := o.Stats(ctx); return st.Pending == 0 })
		cancel()
		wg.Wait()
		t.Logf("3 relays, %v", time.Since(start).Round(time.Millisecond))
		pub.report(t, n, false)
	})
}

func TestRelayCancelledBetweenPublishAndRemove(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		o, err := New(ctx, d.db, d.dialect, d.opts)
		if err != nil {
			t.Fatal(err)
		}
		const n = 60
		enqueueOrders(t, d, o, 0, n, func(i int) string { return fmt.Sprint("k", i%3) })
		pub := newChecker(0)
		rctx, stop := context.WithCancel(ctx)
		r := o.Relay(pub, &RelayOptions{Lease: time.Second, BatchSize: 20, PollInterval: 5 * time.Millisecond})
		var published atomic.Int32
		r.afterPublish = func(*eventbus.Message) {
			if published.Add(1) == 25 {
				stop()
			}
		}
		_ = r.Run(rctx)
		// A second relay finishes the work.
		rctx, stop2 := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = o.Relay(pub, &RelayOptions{PollInterval: 5 * time.Millisecond}).Run(rctx)
		}()
		waitFor(t, "all published", func() bool { st, _ := o.Stats(ctx); return st.Pending == 0 })
		stop2()
		<-done
		pub.report(t, n, true)
	})
}

func TestRefusedMessageIsSetAside(t *testing.T) {
	forEachDB(t, func(t *testing.T, d testDB) {
		ctx := context.Background()
		o, _ := New(ctx, d.db, d.dialect, d.opts)
		bus := eventbus.New(nil)
		_ = bus.Register("mem", membus.New(&membus.Options{MaxMessageSize: 1024}))
		got := make(chan string, 10)
		_, _ = bus.SubscribeEvents(ctx, []string{"t"}, "g", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			got <- m.ID
			return nil
		}))
		if err := bus.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer bus.Close(ctx)
		tx, _ := d.db.BeginTx(ctx, nil)
		if err := errors.Join(o.PublishEvent(ctx, tx, &eventbus.Message{ID: "big", Type: "t", Key: "k", Data: make([]byte, 4096)}),
			o.PublishEvent(ctx, tx, &eventbus.Message{ID: "next", Type: "t", Key: "k"}), tx.Commit()); err != nil {
			t.Fatal(err)
		}
		if _, err := o.Relay(bus, nil).RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != "next" {
				t.Errorf("got %s, want next", id)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("nothing published")
		}
		if st, _ := o.Stats(ctx); st.Pending != 0 || st.Dead != 1 {
			t.Errorf("stats %+v, want 0 pending and 1 set aside", st)
		}
	})
}

// TestRelayRemovesThroughABusyDatabase: the database refuses the removal
// of a published row for a while (SQLite's one writer busy elsewhere, as
// under load): the relay keeps trying while its lease lasts instead of
// leaving the row to be published again when the lease ends.
func TestRelayRemovesThroughABusyDatabase(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBusyDB(t, ctx)
	o, ro, blocker := b.o, b.relay, b.blocker

	const lease = 20 * time.Second
	pub := newChecker(0)
	r := ro.Relay(pub, &RelayOptions{Lease: lease, PollInterval: 5 * time.Millisecond})
	var blocked atomic.Bool
	held := make(chan struct{})
	r.afterPublish = func(*eventbus.Message) {
		if !blocked.CompareAndSwap(false, true) {
			return
		}
		// Take the write lock before the relay removes the row, and keep it
		// for longer than the relay's busy timeout.
		tx, err := blocker.BeginTx(ctx, nil)
		if err != nil {
			t.Error(err)
			close(held)
			return
		}
		if _, err := tx.Exec(`DELETE FROM outbox_messages WHERE seq < 0`); err != nil {
			t.Error(err)
		}
		go func() {
			defer close(held)
			time.Sleep(500 * time.Millisecond)
			_ = tx.Rollback()
		}()
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	b.enqueueOne(t, ctx)
	start := time.Now()
	waitFor(t, "the row removed", func() bool { st, _ := o.Stats(ctx); return st.Pending == 0 })
	took := time.Since(start)
	cancel()
	wg.Wait()
	<-held
	if !blocked.Load() {
		t.Fatal("the database was never made busy")
	}
	t.Logf("removed %v after the publish, through a busy database", took.Round(time.Millisecond))
	if took >= lease {
		t.Errorf("the row was removed only after its lease (%v)", took)
	}
	pub.report(t, 1, false)
}

// TestRelayStopsWhileTheDatabaseRefuses: a relay being stopped while the
// database refuses to settle a published row tries for a few seconds, not
// for the rest of its lease; the row is published again after the lease (a
// duplicate, never a loss).
func TestRelayStopsWhileTheDatabaseRefuses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBusyDB(t, ctx)
	ro, blocker := b.relay, b.blocker
	var err error

	const lease = time.Minute
	r := ro.Relay(newChecker(0), &RelayOptions{Lease: lease, PollInterval: 5 * time.Millisecond})
	var held *sql.Tx
	published := make(chan struct{})
	r.afterPublish = func(*eventbus.Message) {
		// Hold the write lock from now on: the removal cannot succeed.
		if held, err = blocker.BeginTx(context.Background(), nil); err == nil {
			_, err = held.Exec(`DELETE FROM outbox_messages WHERE seq < 0`)
		}
		close(published)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(runCtx) }()
	b.enqueueOne(t, ctx)
	select {
	case <-published:
	case <-time.After(60 * time.Second):
		t.Fatal("never published")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	start := time.Now()
	stop()
	select {
	case <-done:
	case <-time.After(lease / 2):
		t.Fatalf("Run still settling %v after it was stopped (lease %v)", lease/2, lease)
	}
	t.Logf("Run returned %v after it was stopped, with the database refusing", time.Since(start).Round(time.Millisecond))
}

// busyDB is an outbox on a SQLite file with a relay handle that gives up on
// a busy database after 20 ms, and a handle to make it busy with.
type busyDB struct {
	db, blocker *sql.DB
	o, relay    *Outbox
}

func newBusyDB(t *testing.T, ctx context.Context) *busyDB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "o.db")
	open := func(db *sql.DB, err error) *sql.DB {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	b := &busyDB{
		db:      open(OpenSQLite(path)),
		blocker: open(OpenSQLite(path)),
	}
	relayDB := open(sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(20)&_txlock=immediate"))
	var err error
	if b.o, err = New(ctx, b.db, SQLite, nil); err != nil {
		t.Fatal(err)
	}
	if b.relay, err = New(ctx, relayDB, SQLite, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

// enqueueOne commits one order event to the outbox.
func (b *busyDB) enqueueOne(t *testing.T, ctx context.Context) {
	t.Helper()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.o.PublishEvent(ctx, tx, &eventbus.Message{ID: "o-0000", Type: "order.placed", Data: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
