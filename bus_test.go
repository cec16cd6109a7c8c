package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastRetry keeps redelivery tests short.
var fastRetry = eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

// instance is one service instance: a bus on its own connection to a shared
// in-memory broker.
func instance(t *testing.T, broker *membus.Driver, name string, setup func(b *eventbus.Bus)) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(&eventbus.Options{Source: name, Retry: fastRetry, QueryTimeout: 2 * time.Second})
	if err := b.Register("mem", broker.Connect()); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(b)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects what handlers saw.
type recorder struct {
	mu   sync.Mutex
	msgs []*eventbus.Message
	ch   chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1<<16)} }

func (r *recorder) Handle(_ context.Context, m *eventbus.Message) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.ch <- struct{}{}
	return nil
}

func (r *recorder) wait(t *testing.T, n int) []*eventbus.Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("received %d of %d messages", i, n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// quiet asserts that nothing more arrives for a short while.
func (r *recorder) quiet(t *testing.T) {
	t.Helper()
	select {
	case <-r.ch:
		t.Fatalf("unexpected extra message (now %d)", r.count())
	case <-time.After(100 * time.Millisecond):
	}
}

func event(t *testing.T, typ string, v any) *eventbus.Message {
	m, err := eventbus.NewMessage(typ, v)
	must(t, err)
	return m
}

func TestEventsCompeteInGroupAndFanOutAcrossGroups(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	billing1, billing2, audit := newRecorder(), newRecorder(), newRecorder()
	instance(t, broker, "billing-1", func(b *eventbus.Bus) {
		must(t, b.SubscribeEvents([]string{"order.created"}, "billing", billing1))
	})
	instance(t, broker, "billing-2", func(b *eventbus.Bus) {
		must(t, b.SubscribeEvents([]string{"order.created"}, "billing", billing2))
		must(t, b.SubscribeEvents([]string{"order.created"}, "audit", audit))
	})
	pub := instance(t, broker, "orders", nil)
	const n = 200
	for i := range n {
		must(t, pub.PublishEvent(ctxT(t), event(t, "order.created", map[string]int{"n": i})))
	}
	got := audit.wait(t, n)
	deadline := time.Now().Add(5 * time.Second)
	for billing1.count()+billing2.count() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if b1, b2 := billing1.count(), billing2.count(); b1+b2 != n {
		t.Fatalf("billing group handled %d+%d events, want %d in all", b1, b2, n)
	}
	seen := map[string]bool{}
	for _, m := range append(billing1.msgs, billing2.msgs...) {
		if seen[m.ID] {
			t.Fatalf("event %s handled twice in one group", m.ID)
		}
		seen[m.ID] = true
	}
	if len(got) != n || got[0].Source != "orders" || got[0].Type != "order.created" || string(got[0].Data) != `{"n":0}` {
		t.Fatalf("audit got %d events, first %+v", len(got), got[0])
	}
}

func TestCommandHandledByExactlyOneInstance(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var handled sync.Map
	var count atomic.Int64
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if _, dup := handled.LoadOrStore(m.ID, true); dup {
			t.Errorf("command %s handled twice", m.ID)
		}
		count.Add(1)
		return nil
	})
	for i := range 3 {
		instance(t, broker, fmt.Sprintf("billing-%d", i), func(b *eventbus.Bus) {
			must(t, b.HandleCommand("billing", "charge", h))
		})
	}
	client := instance(t, broker, "orders", nil)
	for i := range 90 {
		must(t, client.SendCommand(ctxT(t), "billing", event(t, "charge", i)))
	}
	waitFor(t, func() bool { return count.Load() == 90 })
	time.Sleep(50 * time.Millisecond)
	if c := count.Load(); c != 90 {
		t.Fatalf("handled %d commands, want 90", c)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type price struct {
	SKU   string `json:"sku"`
	Cents int    `json:"cents"`
}

func queryServer(t *testing.T, broker driver.Driver) {
	t.Helper()
	b := eventbus.New(&eventbus.Options{Source: "catalog"})
	must(t, b.Register("mem", broker))
	must(t, b.HandleQuery("catalog", "price.get", eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, sku string) (price, error) {
		switch sku {
		case "missing":
			return price{}, eventbus.Errorf("not_found", "no sku %q", sku)
		case "slow":
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			return price{}, errors.New("too late")
		case "panic":
			panic("boom")
		}
		return price{SKU: sku, Cents: len(sku) * 100}, nil
	})))
	must(t, b.Start(context.Background()))
	t.Cleanup(func() { must(t, b.Close(context.Background())) })
}

// withoutNative hides a driver's native request/reply, so that the bus uses
// its generic reply-destination fallback.
type withoutNative struct{ driver.Driver }

func (w withoutNative) Capabilities() driver.Capabilities {
	c := w.Driver.Capabilities()
	c.NativeRequestReply = false
	return c
}

func TestQuery(t *testing.T) {
	for _, mode := range []string{"native", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			broker := membus.New(nil)
			defer broker.Close(context.Background())
			conn := func() driver.Driver {
				if mode == "native" {
					return broker.Connect()
				}
				return withoutNative{broker.Connect()}
			}
			queryServer(t, conn())
			client := eventbus.New(&eventbus.Options{Source: "shop"})
			must(t, client.Register("mem", conn()))
			must(t, client.Start(context.Background()))
			defer client.Close(context.Background())

			// Concurrent queries each get their own reply.
			var wg sync.WaitGroup
			for _, sku := range []string{"a", "bb", "ccc", "dddd"} {
				wg.Go(func() {
					p, err := eventbus.Ask[price](ctxT(t), client, "catalog", "price.get", sku)
					if err != nil || p.SKU != sku || p.Cents != len(sku)*100 {
						t.Errorf("Ask(%q) = %+v, %v", sku, p, err)
					}
				})
			}
			wg.Wait()

			_, err := eventbus.Ask[price](ctxT(t), client, "catalog", "price.get", "missing")
			var remote *eventbus.RemoteError
			if !errors.As(err, &remote) || remote.Code != "not_found" || remote.Message == "" {
				t.Fatalf("remote error: got %v", err)
			}
			_, err = eventbus.Ask[price](ctxT(t), client, "catalog", "price.get", "panic")
			if !errors.As(err, &remote) {
				t.Fatalf("panicking handler: got %v, want RemoteError", err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err = eventbus.Ask[price](ctx, client, "catalog", "price.get", "slow")
			if !errors.Is(err, eventbus.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slow query: got %v, want ErrTimeout", err)
			}
			if time.Since(start) > time.Second {
				t.Fatalf("timeout took %v", time.Since(start))
			}

			if mode == "native" {
				_, err = eventbus.Ask[price](ctxT(t), client, "nobody", "price.get", "a")
				if !errors.Is(err, eventbus.ErrNoResponders) {
					t.Fatalf("no responders: got %v", err)
				}
			}
		})
	}
}

func TestStreamBatches(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var mu sync.Mutex
	var sizes []int
	var got []int
	failOnce := true
	batches := make(chan struct{}, 100)
	proc := eventbus.TypedBatch(func(_ context.Context, ms []*eventbus.Message, vs []int) error {
		mu.Lock()
		defer mu.Unlock()
		if failOnce && slices.Contains(vs, 12) {
			failOnce = false
			return errors.New("transient")
		}
		sizes = append(sizes, len(vs))
		got = append(got, vs...)
		batches <- struct{}{}
		return nil
	})
	b := eventbus.New(&eventbus.Options{Retry: fastRetry})
	must(t, b.Register("mem", broker.Connect()))
	must(t, b.ProcessStream("clicks", "analytics", proc, &eventbus.BatchOptions{Size: 10, MaxWait: 200 * time.Millisecond}))
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())

	msgs := make([]*eventbus.Message, 25)
	for i := range msgs {
		msgs[i] = event(t, "click", i)
		msgs[i].Key = "user-1"
	}
	must(t, b.PublishStream(ctxT(t), "clicks", msgs...))
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 25 })
	mu.Lock()
	defer mu.Unlock()
	// The batch holding 12 failed once and was redelivered whole: nothing lost,
	// nothing handled twice, and the 5 left over were flushed on MaxWait.
	slices.Sort(got)
	for i, v := range got {
		if v != i {
			t.Fatalf("handled %v, want 0..24 once each", got)
		}
	}
	for _, s := range sizes {
		if s > 10 {
			t.Fatalf("batch sizes %v exceed 10", sizes)
		}
	}
}

func TestStreamPartialBatchFlushedOnClose(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var handled atomic.Int64
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, b.ProcessStream("clicks", "analytics", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
		handled.Add(int64(len(ms)))
		return nil
	}), &eventbus.BatchOptions{Size: 100, MaxWait: time.Hour}))
	must(t, b.Start(context.Background()))
	for i := range 7 {
		must(t, b.PublishStream(ctxT(t), "clicks", event(t, "click", i)))
	}
	time.Sleep(50 * time.Millisecond)
	if h := handled.Load(); h != 0 {
		t.Fatalf("a partial batch was handled before MaxWait: %d", h)
	}
	must(t, b.Close(ctxT(t)))
	if h := handled.Load(); h != 7 {
		t.Fatalf("Close flushed %d messages, want 7", h)
	}
}

func TestStreamOrderPerKeyWithConcurrency(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var mu sync.Mutex
	seen := map[string][]int{}
	total := 0
	h := eventbus.Typed(func(_ context.Context, m *eventbus.Message, v int) error {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Key] = append(seen[m.Key], v)
		total++
		return nil
	})
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, b.SubscribeEvents([]string{"account.changed"}, "ledger", h, eventbus.WithConcurrency(4)))
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())
	keys := []string{"a", "b", "c", "d", "e"}
	for i := range 500 {
		m := event(t, "account.changed", i)
		m.Key = keys[i%len(keys)]
		must(t, b.PublishEvent(ctxT(t), m))
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return total == 500 })
	mu.Lock()
	defer mu.Unlock()
	for k, vs := range seen {
		if !slices.IsSorted(vs) || len(vs) != 100 {
			t.Fatalf("key %s: %d messages, in order: %v", k, len(vs), slices.IsSorted(vs))
		}
	}
}

func TestBroadcastReachesEveryInstance(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	recs := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	for i, r := range recs {
		instance(t, broker, fmt.Sprintf("cache-%d", i), func(b *eventbus.Bus) {
			must(t, b.SubscribeBroadcast([]string{"cache.flush"}, r))
		})
	}
	pub := instance(t, broker, "admin", nil)
	must(t, pub.Broadcast(ctxT(t), event(t, "cache.flush", "all")))
	for _, r := range recs {
		if got := r.wait(t, 1); string(got[0].Data) != `"all"` {
			t.Fatalf("broadcast data %q", got[0].Data)
		}
		r.quiet(t)
	}
}

// deadLetters subscribes to the dead-letter destination of dest on broker.
func deadLetters(t *testing.T, broker *membus.Driver, dest string) driver.Subscription {
	t.Helper()
	conn := broker.Connect()
	t.Cleanup(func() { conn.Close(context.Background()) })
	sub, err := conn.Subscribe(ctxT(t), driver.DeadLetterOf(driver.Destination{Pattern: driver.Event, Name: dest}), driver.SubscribeOptions{})
	must(t, err)
	return sub
}

func receiveOne(t *testing.T, sub driver.Subscription) *driver.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := sub.Receive(ctx, 1)
	must(t, err)
	must(t, sub.Ack(ctx, ds))
	return ds[0]
}

func TestFailuresAreRetriedThenDeadLettered(t *testing.T) {
	cases := []struct {
		name         string
		handler      eventbus.Handler
		wantAttempts int
		wantReason   string
	}{
		{"error", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return errors.New("db down") }), 3, "db down"},
		{"permanent", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
			return eventbus.Permanent(errors.New("invalid order"))
		}), 1, "invalid order"},
		{"panic", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { panic("nil map") }), 3, "handler panicked: nil map"},
		{"undecodable", eventbus.Typed(func(context.Context, *eventbus.Message, price) error { return nil }), 1, "decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			broker := membus.New(nil)
			defer broker.Close(context.Background())
			dlq := deadLetters(t, broker, "events.order.created")
			var attempts atomic.Int64
			counting := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
				attempts.Add(1)
				return tc.handler.Handle(ctx, m)
			})
			b := instance(t, broker, "svc", func(b *eventbus.Bus) {
				must(t, b.SubscribeEvents([]string{"order.created"}, "g", counting))
			})
			m := &eventbus.Message{Type: "order.created", Data: []byte("not json"), Subject: "order-7"}
			must(t, b.PublishEvent(ctxT(t), m))
			d := receiveOne(t, dlq)
			got := d.Message
			if got.ID != m.ID || got.Subject != "order-7" || string(got.Data) != "not json" {
				t.Fatalf("dead letter lost the original: %+v", got)
			}
			ext := got.Extensions
			if ext[driver.ExtDeadLetterOrigin] != "events.order.created" || ext[driver.ExtDeadLetterAttempts] != fmt.Sprint(tc.wantAttempts) {
				t.Fatalf("dead-letter attributes %v, want %d attempts", ext, tc.wantAttempts)
			}
			if !strings.Contains(ext[driver.ExtDeadLetterReason], tc.wantReason) {
				t.Fatalf("reason %q, want it to mention %q", ext[driver.ExtDeadLetterReason], tc.wantReason)
			}
			if a := attempts.Load(); a != int64(tc.wantAttempts) {
				t.Fatalf("handler ran %d times, want %d", a, tc.wantAttempts)
			}
		})
	}
}
