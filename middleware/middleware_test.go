package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/middleware"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startBus starts a bus on drv with h subscribed to events of type "t" in
// group "g", wrapped in mws, and closes it at the end of the test.
func startBus(t *testing.T, drv driver.Driver, retry eventbus.RetryPolicy, h eventbus.HandlerFunc, mws []eventbus.Middleware, opts ...eventbus.SubscribeOption) *eventbus.Bus {
	t.Helper()
	ctx := context.Background()
	b := eventbus.New(&eventbus.Options{Source: "test", Retry: retry, Middleware: mws})
	if err := b.Register("b", drv); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeEvents(ctx, []string{"t"}, "g", h, opts...); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

func publish(t *testing.T, b *eventbus.Bus, id string) {
	t.Helper()
	if err := b.PublishEvent(context.Background(), &eventbus.Message{ID: id, Type: "t", Key: id}); err != nil {
		t.Fatal(err)
	}
}

var fast = eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func TestRetryInProcess(t *testing.T) {
	var calls atomic.Int32
	h := func(ctx context.Context, m *eventbus.Message) error {
		if calls.Add(1) < 3 {
			return errors.New("flaky")
		}
		return nil
	}
	opts := &middleware.RetryOptions{MaxAttempts: 3, InitialBackoff: 40 * time.Millisecond}
	b := startBus(t, membus.New(nil), fast, h, []eventbus.Middleware{middleware.Retry(opts)})
	start := time.Now()
	publish(t, b, "m1")
	waitFor(t, "handled", func() bool { return b.Stats().Handled == 1 })
	took := time.Since(start)
	// Two waits: 40ms and 80ms, each at least 75% of itself.
	if min := 90 * time.Millisecond; took < min {
		t.Errorf("took %v, want at least %v of backoff", took, min)
	}
	st := b.Stats()
	if calls.Load() != 3 || st.Failed != 0 || st.DeadLettered != 0 {
		t.Errorf("calls %d, bus failures %d, dead letters %d; want 3, 0 (the bus saw one success), 0", calls.Load(), st.Failed, st.DeadLettered)
	}
	t.Logf("3 calls in one delivery in %v", took)
}

func TestRetryCombinesWithBusRedelivery(t *testing.T) {
	var calls, permCalls atomic.Int32
	h := func(ctx context.Context, m *eventbus.Message) error {
		if m.ID == "perm" {
			permCalls.Add(1)
			return eventbus.Permanent(errors.New("bad input"))
		}
		calls.Add(1)
		return errors.New("down")
	}
	mw := middleware.Retry(&middleware.RetryOptions{MaxAttempts: 2, InitialBackoff: time.Millisecond})
	b := startBus(t, membus.New(nil), fast, h, []eventbus.Middleware{mw})
	publish(t, b, "always")
	publish(t, b, "perm")
	waitFor(t, "two dead letters", func() bool { return b.Stats().DeadLettered == 2 })
	// 3 deliveries (the bus's MaxAttempts) × 2 tries each; a permanent
	// error is tried once.
	if calls.Load() != 6 || permCalls.Load() != 1 {
		t.Errorf("calls %d and %d, want 6 and 1", calls.Load(), permCalls.Load())
	}
	if f := b.Stats().Failed; f != 4 {
		t.Errorf("bus counted %d failed attempts, want 4 (3 + 1)", f)
	}
}

func TestTimeout(t *testing.T) {
	errs := make(chan error, 1)
	inner := func(ctx context.Context, m *eventbus.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}
	// A middleware outside Timeout sees the error the bus will see.
	spy := func(next eventbus.Handler) eventbus.Handler {
		return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			err := next.Handle(ctx, m)
			select {
			case errs <- err:
			default:
			}
			return err
		})
	}
	b := startBus(t, membus.New(nil), eventbus.RetryPolicy{MaxAttempts: 1}, inner,
		[]eventbus.Middleware{spy, middleware.Timeout(50 * time.Millisecond)})
	start := time.Now()
	publish(t, b, "slow")
	err := <-errs
	took := time.Since(start)
	if !errors.Is(err, middleware.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if took < 50*time.Millisecond {
		t.Errorf("returned after %v, before the 50ms timeout", took)
	}
	waitFor(t, "dead letter", func() bool { return b.Stats().DeadLettered == 1 })
}

func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	h := func(ctx context.Context, m *eventbus.Message) error {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		return nil
	}
	lim := rate.NewLimiter(rate.Every(40*time.Millisecond), 1)
	b := startBus(t, membus.New(nil), fast, h, []eventbus.Middleware{middleware.RateLimit(lim)}, eventbus.WithConcurrency(4))
	const n = 6
	for i := range n {
		publish(t, b, fmt.Sprint("m", i))
	}
	waitFor(t, "all handled", func() bool { return b.Stats().Handled == n })
	mu.Lock()
	defer mu.Unlock()
	// One token at once, then one per 40ms: 5 intervals at the least.
	span := at[len(at)-1].Sub(at[0])
	if min := 5 * 40 * time.Millisecond * 9 / 10; span < min {
		t.Errorf("%d calls in %v, want at least %v", n, span, min)
	}
	t.Logf("%d calls over %v at 25/s", n, span)
}

func TestDedup(t *testing.T) {
	var calls atomic.Int32
	h := func(ctx context.Context, m *eventbus.Message) error {
		calls.Add(1)
		return nil
	}
	d := middleware.NewDedup(&middleware.DedupOptions{Size: 2})
	b := startBus(t, membus.New(nil), fast, h, []eventbus.Middleware{d.Wrap})
	for _, id := range []string{"a", "a", "b", "a"} {
		publish(t, b, id)
	}
	waitFor(t, "four acks", func() bool { return b.Stats().Handled == 4 })
	if calls.Load() != 2 {
		t.Errorf("handler ran %d times, want 2 (a, b)", calls.Load())
	}
	// Size 2: c pushes a out of memory (b is newer), so a runs again.
	publish(t, b, "c")
	publish(t, b, "a")
	waitFor(t, "six acks", func() bool { return b.Stats().Handled == 6 })
	if calls.Load() != 4 || d.Len() != 2 {
		t.Errorf("handler ran %d times with %d remembered, want 4 and 2", calls.Load(), d.Len())
	}
}

func TestDedupConcurrentDuplicates(t *testing.T) {
	d := middleware.NewDedup(nil)
	var calls, running atomic.Int32
	release := make(chan struct{})
	h := d.Wrap(eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		calls.Add(1)
		if running.Add(1) > 1 {
			t.Error("two calls of one message at once")
		}
		<-release
		running.Add(-1)
		return nil
	}))
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if err := h.Handle(context.Background(), &eventbus.Message{Source: "s", ID: "x"}); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "first call", func() bool { return calls.Load() == 1 })
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Errorf("%d calls, want 1", calls.Load())
	}
	// Same id, other source: another message.
	if err := h.Handle(context.Background(), &eventbus.Message{Source: "t", ID: "x"}); err != nil || calls.Load() != 2 {
		t.Errorf("other source: %v, %d calls", err, calls.Load())
	}
}

func TestDedupTTL(t *testing.T) {
	d := middleware.NewDedup(&middleware.DedupOptions{TTL: 30 * time.Millisecond})
	var calls atomic.Int32
	h := d.Wrap(eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error { calls.Add(1); return nil }))
	m := &eventbus.Message{Source: "s", ID: "x"}
	_ = h.Handle(context.Background(), m)
	_ = h.Handle(context.Background(), m)
	if calls.Load() != 1 {
		t.Fatalf("%d calls before the TTL, want 1", calls.Load())
	}
	waitFor(t, "TTL", func() bool { _ = h.Handle(context.Background(), m); return calls.Load() == 2 })
}

func TestCorrelation(t *testing.T) {
	got := make(chan *eventbus.Message, 2)
	ctx := context.Background()
	b := eventbus.New(&eventbus.Options{Source: "test", Middleware: []eventbus.Middleware{middleware.Correlate()}})
	_ = b.Register("mem", membus.New(nil))
	_, _ = b.SubscribeEvents(ctx, []string{"order.placed"}, "billing", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		return b.PublishEvent(ctx, middleware.Caused(ctx, &eventbus.Message{Type: "invoice.created"}))
	}))
	_, _ = b.SubscribeEvents(ctx, []string{"invoice.created"}, "mail", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		got <- m
		return b.PublishEvent(ctx, middleware.Caused(ctx, &eventbus.Message{Type: "mail.sent"}))
	}))
	_, _ = b.SubscribeEvents(ctx, []string{"mail.sent"}, "audit", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		got <- m
		return nil
	}))
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := b.PublishEvent(ctx, &eventbus.Message{ID: "order-1", Type: "order.placed"}); err != nil {
		t.Fatal(err)
	}
	inv, mail := <-got, <-got
	if inv.CorrelationID != "order-1" || inv.CausationID != "order-1" {
		t.Errorf("invoice: correlation %q causation %q, want order-1 order-1", inv.CorrelationID, inv.CausationID)
	}
	if mail.CorrelationID != "order-1" || mail.CausationID != inv.ID {
		t.Errorf("mail: correlation %q causation %q, want order-1 %s", mail.CorrelationID, mail.CausationID, inv.ID)
	}
}

// breakerRun drives a breaker on b's subscription: the downstream is down
// for the first trips open periods, and every transition records the
// handler calls made so far. It returns those figures.
type breakerRun struct {
	calls       atomic.Int32
	down        atomic.Bool
	mu          sync.Mutex
	transitions []string
	callsAt     []int32
	opened      atomic.Int32
}

func (r *breakerRun) settings(timeout time.Duration) gobreaker.Settings {
	return gobreaker.Settings{
		Name:        "payments",
		Timeout:     timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			r.mu.Lock()
			r.transitions = append(r.transitions, from.String()+"→"+to.String())
			r.callsAt = append(r.callsAt, r.calls.Load())
			r.mu.Unlock()
			if to == gobreaker.StateOpen {
				r.opened.Add(1)
			}
		},
	}
}

func (r *breakerRun) handler(ctx context.Context, m *eventbus.Message) error {
	r.calls.Add(1)
	if r.down.Load() {
		return errors.New("payments down")
	}
	return nil
}

// check asserts that no call ran while the breaker was open: between
// closed→open (or half-open→open) and open→half-open the call count does
// not move.
func (r *breakerRun) check(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, tr := range r.transitions {
		if tr == "open→half-open" && i > 0 && r.callsAt[i] != r.callsAt[i-1] {
			t.Errorf("%d handler calls while the breaker was open (transitions %v at calls %v)", r.callsAt[i]-r.callsAt[i-1], r.transitions, r.callsAt)
		}
	}
	t.Logf("transitions %v at calls %v", r.transitions, r.callsAt)
}

func TestBreakerPausesIntake(t *testing.T) {
	run := &breakerRun{}
	run.down.Store(true)
	br := middleware.NewBreaker(run.settings(150 * time.Millisecond))
	forever := eventbus.RetryPolicy{MaxAttempts: eventbus.RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	b := startBus(t, membus.New(nil), forever, run.handler, []eventbus.Middleware{br.Wrap}, eventbus.WithConcurrency(4))
	const n = 20
	for i := range n {
		publish(t, b, fmt.Sprint("m", i))
	}
	// Three failures open it; a failed probe opens it again.
	waitFor(t, "two open periods", func() bool { return run.opened.Load() >= 2 })
	failedWhileDown := b.Stats().Failed
	run.down.Store(false)
	waitFor(t, "all handled", func() bool { return b.Stats().Handled == n })
	run.check(t)
	st := b.Stats()
	// Every failed attempt is a call the breaker let through while closed
	// (3, possibly a few more already running when it tripped) or a probe.
	if st.Failed != failedWhileDown || st.Failed > 3+4+1 {
		t.Errorf("%d failed attempts (%d when the downstream came back), want at most 8: the open breaker must not burn attempts", st.Failed, failedWhileDown)
	}
	if got := run.calls.Load(); int(got) != n+int(st.Failed) {
		t.Errorf("%d calls, want %d successes + %d failures", got, n, st.Failed)
	}
	if br.State() != gobreaker.StateClosed {
		t.Errorf("breaker %v, want closed", br.State())
	}
}

func TestBreakerWaitEndsWithContext(t *testing.T) {
	br := middleware.NewBreaker(gobreaker.Settings{Timeout: time.Hour, ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 }})
	h := br.Wrap(eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error { return errors.New("down") }))
	_ = h.Handle(context.Background(), &eventbus.Message{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := h.Handle(ctx, &eventbus.Message{})
	if !errors.Is(err, gobreaker.ErrOpenState) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want ErrOpenState and DeadlineExceeded", err)
	}
}
