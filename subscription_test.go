package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

func startedBus(t *testing.T, d driver.Driver, opts *eventbus.Options) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(opts)
	must(t, b.Register("mem", d))
	must(t, b.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

func TestSubscribeAfterStart(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry})
	ctx := ctxT(t)

	events := newRecorder()
	sub, err := b.SubscribeEvents(ctx, []string{"order.placed"}, "billing", events)
	must(t, err)
	if got := sub.Destinations(); len(got) != 1 || got[0] != "events.order.placed" {
		t.Fatalf("Destinations = %v", got)
	}
	// Established when it returns: a publish right after is delivered.
	must(t, b.PublishEvent(ctx, event(t, "order.placed", "o-1")))
	if got := events.wait(t, 1); string(got[0].Data) != `"o-1"` {
		t.Fatalf("data %s", got[0].Data)
	}

	must(t, errOnly(b.HandleQuery(ctx, "inventory", "stock.get", eventbus.TypedQuery(func(_ context.Context, _ *eventbus.Message, sku string) (int, error) {
		return len(sku), nil
	}))))
	n, err := eventbus.Ask[int](ctx, b, "inventory", "stock.get", "abcd")
	if err != nil || n != 4 {
		t.Fatalf("query after start: %d, %v", n, err)
	}

	commands := newRecorder()
	must(t, errOnly(b.HandleCommand(ctx, "mailer", "send", commands)))
	must(t, b.SendCommand(ctx, "mailer", event(t, "send", 1)))
	commands.wait(t, 1)

	batches := make(chan int, 10)
	must(t, errOnly(b.ProcessStream(ctx, "clicks", "analytics", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
		batches <- len(ms)
		return nil
	}), &eventbus.BatchOptions{Size: 3, MaxWait: time.Minute})))
	must(t, b.PublishStream(ctx, "clicks", event(t, "click", 1), event(t, "click", 2), event(t, "click", 3)))
	select {
	case got := <-batches:
		if got != 3 {
			t.Fatalf("batch of %d", got)
		}
	case <-ctx.Done():
		t.Fatal("no batch")
	}

	// Closing unsubscribes: nothing more reaches the handler, and the same
	// destination and group can be subscribed again.
	must(t, sub.Close(ctx))
	must(t, sub.Close(ctx))
	must(t, b.PublishEvent(ctx, event(t, "order.placed", "o-2")))
	events.quiet(t)
	again := newRecorder()
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"order.placed"}, "billing", again)))
	must(t, b.PublishEvent(ctx, event(t, "order.placed", "o-3")))
	again.wait(t, 1)
}

func TestSubscribeAfterStartIsValidatedAtOnce(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(nil)
	must(t, b.Register("cache", named{Driver: broker.Connect(), name: "redis", patterns: []driver.Pattern{driver.Event, driver.Broadcast}}))
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())
	ctx := ctxT(t)
	h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })

	_, err := b.ProcessStream(ctx, "clicks", "analytics", eventbus.BatchHandlerFunc(func(context.Context, []*eventbus.Message) error { return nil }), nil)
	var cfg *eventbus.ConfigError
	if !errors.As(err, &cfg) || !errors.Is(err, eventbus.ErrNoBackend) {
		t.Fatalf("stream on a backend without streams: %v", err)
	}
	if _, err := b.SubscribeEvents(ctx, []string{"a"}, "", h, eventbus.WithStartFirst()); !errors.Is(err, eventbus.ErrCapability) {
		t.Fatalf("StartFirst on a non-durable backend: %v", err)
	}
	if _, err := b.SubscribeEvents(ctx, []string{"a b"}, "", h); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Fatalf("bad type after start: %v", err)
	}
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"a"}, "g", h)))
	if _, err := b.SubscribeEvents(ctx, []string{"a"}, "g", h); !errors.Is(err, eventbus.ErrDuplicateHandler) {
		t.Fatalf("duplicate after start: %v", err)
	}
	must(t, b.Close(ctx))
	if _, err := b.SubscribeEvents(ctx, []string{"b"}, "g", h); !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
}

// A subscription closed before Start is withdrawn: Start does not open it.
func TestSubscriptionClosedBeforeStart(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	rec := newRecorder()
	sub, err := b.SubscribeEvents(context.Background(), []string{"a"}, "g", rec)
	must(t, err)
	must(t, sub.Close(context.Background()))
	kept := newRecorder()
	must(t, errOnly(b.SubscribeEvents(context.Background(), []string{"a"}, "g", kept)))
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())
	must(t, b.PublishEvent(ctxT(t), event(t, "a", 1)))
	kept.wait(t, 1)
	if rec.count() != 0 {
		t.Fatal("a withdrawn subscription received a message")
	}
}

// Two members of a group share a stream of events; one unsubscribes in the
// middle. Every event is handled, by one member or the other.
func TestUnsubscribeUnderLoadLosesNothing(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	a := startedBus(t, broker.Connect(), nil)
	b := startedBus(t, broker.Connect(), nil)
	ctx := ctxT(t)
	var mu sync.Mutex
	seen := map[string]int{}
	var handledByA atomic.Int64
	handler := func(who *atomic.Int64) eventbus.Handler {
		return eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			if who != nil {
				who.Add(1)
			}
			mu.Lock()
			seen[string(m.Data)]++
			mu.Unlock()
			return nil
		})
	}
	subA, err := a.SubscribeEvents(ctx, []string{"tick"}, "g", handler(&handledByA), eventbus.WithConcurrency(4))
	must(t, err)
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"tick"}, "g", handler(nil))))
	const total = 2000
	go func() {
		// Unsubscribe A once it has handled a share of the load.
		for handledByA.Load() < total/10 && ctx.Err() == nil {
			runtime.Gosched()
			time.Sleep(time.Millisecond)
		}
		if err := subA.Close(ctx); err != nil {
			t.Errorf("close A: %v", err)
		}
	}()
	for i := range total {
		must(t, a.PublishEvent(ctx, event(t, "tick", i)))
	}
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	if handledByA.Load() == 0 || handledByA.Load() == total {
		t.Fatalf("A handled %d of %d: the test did not share the load", handledByA.Load(), total)
	}
}

// Subscribing and unsubscribing many times leaves no goroutine behind (the
// package's goleak check covers what outlives the test).
func TestSubscribeUnsubscribeCycles(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), nil)
	ctx := ctxT(t)
	h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })
	before := runtime.NumGoroutine()
	for i := range 1000 {
		group := ""
		if i%2 == 0 {
			group = "g"
		}
		sub, err := b.SubscribeEvents(ctx, []string{"cycle"}, group, h, eventbus.WithConcurrency(1+i%3))
		must(t, err)
		must(t, sub.Close(ctx))
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before+2 })
}

// With WithConcurrency, a slow key holds up only its own messages; each key
// keeps its order.
func TestSlowKeyDoesNotStopOtherWorkers(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), nil)
	ctx := ctxT(t)
	release := make(chan struct{})
	var mu sync.Mutex
	order := map[string][]int{}
	fastDone := make(chan struct{})
	fast := 0
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"acct"}, "ledger", eventbus.Typed(func(_ context.Context, m *eventbus.Message, n int) error {
		if m.Key == "slow" {
			<-release
		}
		mu.Lock()
		defer mu.Unlock()
		order[m.Key] = append(order[m.Key], n)
		if m.Key != "slow" {
			if fast++; fast == 300 {
				close(fastDone)
			}
		}
		return nil
	}), eventbus.WithConcurrency(4))))
	// The slow key's backlog stays within the subscription's in-flight
	// bound (max(64, 4 × concurrency)), which it shares with the others.
	for i := range 100 {
		for _, key := range []string{"slow", "a", "b", "c"} {
			if key == "slow" && i >= 20 {
				continue
			}
			m := event(t, "acct", i)
			m.Key = key
			must(t, b.PublishEvent(ctx, m))
		}
	}
	select {
	case <-fastDone:
	case <-ctx.Done():
		t.Fatal("the fast keys waited for the slow one")
	}
	close(release)
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order["slow"]) == 20
	})
	mu.Lock()
	defer mu.Unlock()
	for key, got := range order {
		for i, n := range got {
			if n != i {
				t.Fatalf("key %s out of order at %d: %v", key, i, got[:i+1])
			}
		}
	}
}

// Close stops starting handlers at once, gives back what it did not start,
// and keeps its deadline.
func TestCloseKeepsItsDeadlineAndGivesBack(t *testing.T) {
	broker := membus.New(&membus.Options{BufferSize: 10000})
	defer broker.Close(context.Background())
	ctx := ctxT(t)
	var closing atomic.Int64 // unix nanos when Close began
	var lateStarts atomic.Int64
	var handled sync.Map
	a := eventbus.New(nil)
	must(t, a.Register("mem", broker.Connect()))
	must(t, errOnly(a.SubscribeEvents(ctx, []string{"job"}, "workers", eventbus.HandlerFunc(func(hctx context.Context, m *eventbus.Message) error {
		if c := closing.Load(); c != 0 && time.Now().UnixNano() > c {
			lateStarts.Add(1)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-hctx.Done():
			return hctx.Err()
		}
		handled.Store(string(m.Data), true)
		return nil
	}), eventbus.WithConcurrency(4))))
	must(t, a.Start(ctx))
	const total = 5000
	for i := range total {
		must(t, a.PublishEvent(ctx, event(t, "job", i)))
	}
	waitFor(t, func() bool { return a.Stats().Handled >= 8 })
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	closing.Store(time.Now().UnixNano())
	began := time.Now()
	err := a.Close(cctx)
	if took := time.Since(began); took > 2*time.Second+time.Second {
		t.Fatalf("Close took %v with a 2s deadline", took)
	}
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := lateStarts.Load(); n > 0 {
		t.Fatalf("%d handlers started after Close began", n)
	}
	// What A did not handle was given back: B gets all of it, at once.
	b := startedBus(t, broker.Connect(), nil)
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"job"}, "workers", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		handled.Store(string(m.Data), true)
		return nil
	}))))
	waitFor(t, func() bool {
		n := 0
		handled.Range(func(any, any) bool { n++; return true })
		return n == total
	})
}

func TestCloseIdleBusWithDoneContext(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	for i := range 5 {
		must(t, errOnly(b.SubscribeEvents(context.Background(), []string{fmt.Sprint("t", i)}, "g", newRecorder(), eventbus.WithConcurrency(1+i%2))))
	}
	must(t, b.Start(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("closing an idle bus with a done context: %v", err)
	}
}

// A handler that ignores its context cannot hold Close past its deadline by
// more than a short grace.
func TestCloseReturnsWhenAHandlerIgnoresItsContext(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	started := make(chan struct{})
	release := make(chan struct{})
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, errOnly(b.HandleCommand(context.Background(), "worker", "job", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		close(started)
		<-release
		return nil
	}))))
	must(t, b.Start(context.Background()))
	must(t, b.SendCommand(ctxT(t), "worker", event(t, "job", 1)))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := b.Close(ctx)
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	close(release)
}

type nilPointerHandler struct{}

func (*nilPointerHandler) Handle(context.Context, *eventbus.Message) error { return nil }

func TestTypedNilHandlersAreRefused(t *testing.T) {
	b := eventbus.New(nil)
	ctx := context.Background()
	var np *nilPointerHandler
	for name, h := range map[string]eventbus.Handler{
		"HandlerFunc(nil)": eventbus.HandlerFunc(nil),
		"Typed(nil)":       eventbus.Typed[int](nil),
		"nil pointer":      np,
	} {
		if _, err := b.SubscribeEvents(ctx, []string{"a"}, "", h); !errors.Is(err, eventbus.ErrNilHandler) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := b.HandleQuery(ctx, "s", "q", eventbus.TypedQuery[int, int](nil)); !errors.Is(err, eventbus.ErrNilHandler) {
		t.Errorf("TypedQuery(nil): %v", err)
	}
	if _, err := b.ProcessStream(ctx, "s", "g", eventbus.TypedBatch[int](nil), nil); !errors.Is(err, eventbus.ErrNilHandler) {
		t.Errorf("TypedBatch(nil): %v", err)
	}
}

// A subscription's own retry policy replaces the bus's: RetryForever never
// dead-letters, a lower MaxAttempts dead-letters sooner.
func TestRetryPolicyPerSubscription(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry}) // 3 attempts
	ctx := ctxT(t)
	dead := newRecorder()
	sub, err := broker.Connect().Subscribe(ctx, driver.DeadLetterOf(driver.NewDestination(driver.Event, "flaky")), driver.SubscribeOptions{})
	must(t, err)
	defer sub.Close(context.Background())
	go func() {
		for {
			ds, err := sub.Receive(ctx, 10)
			if err != nil {
				return
			}
			for _, d := range ds {
				_ = dead.Handle(ctx, d.Message)
			}
			_ = sub.Ack(ctx, ds)
		}
	}()

	var attempts atomic.Int64
	succeeded := make(chan int, 1)
	forever := eventbus.RetryPolicy{MaxAttempts: eventbus.RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"flaky"}, "forever", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		if n := attempts.Add(1); n < 9 {
			return errors.New("not yet")
		}
		succeeded <- int(attempts.Load())
		return nil
	}), eventbus.WithRetry(forever))))
	var twice atomic.Int64
	must(t, errOnly(b.SubscribeEvents(ctx, []string{"flaky"}, "twice", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		twice.Add(1)
		return errors.New("always")
	}), eventbus.WithRetry(eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond}))))
	must(t, b.PublishEvent(ctx, event(t, "flaky", 1)))
	select {
	case n := <-succeeded:
		if n != 9 {
			t.Fatalf("succeeded at attempt %d", n)
		}
	case <-ctx.Done():
		t.Fatalf("RetryForever gave up after %d attempts", attempts.Load())
	}
	got := dead.wait(t, 1)
	if got[0].Extensions[driver.ExtDeadLetterAttempts] != "2" || twice.Load() != 2 {
		t.Fatalf("dead-lettered after %s attempts (handler ran %d times)", got[0].Extensions[driver.ExtDeadLetterAttempts], twice.Load())
	}
	dead.quiet(t)
}

// refusingDeadLetters refuses every dead-letter publish, as a broker would a
// message it cannot carry.
type refusingDeadLetters struct{ driver.Driver }

func (r refusingDeadLetters) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if dest.Pattern == driver.DeadLetter {
		return &driver.InvalidError{Field: "header", Reason: "cannot be carried"}
	}
	return r.Driver.Publish(ctx, dest, msgs)
}

// A message that can be neither handled nor dead-lettered is reduced until
// it can be, and else terminated and counted: never redelivered forever.
func TestUndeliverableMessagesEndOnce(t *testing.T) {
	broker := membus.New(&membus.Options{MaxMessageSize: 4096})
	defer broker.Close(context.Background())
	ctx := ctxT(t)

	t.Run("reduced", func(t *testing.T) {
		b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry})
		dl, err := broker.Connect().Subscribe(ctx, driver.DeadLetterOf(driver.NewDestination(driver.Event, "big")), driver.SubscribeOptions{Group: "ops", Durable: true})
		must(t, err)
		defer dl.Close(context.Background())
		var calls atomic.Int64
		must(t, errOnly(b.SubscribeEvents(ctx, []string{"big"}, "g", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			calls.Add(1)
			// What a foreign producer could send: a header no envelope
			// check would let through.
			m.Header = map[string][]string{"X Bad": {"1"}, "Good": {"2"}}
			return eventbus.Permanent(errors.New("cannot process\nthis"))
		}))))
		m := event(t, "big", nil)
		m.Data = []byte(strings.Repeat("x", 4000)) // fits; with the dead-letter extensions it does not
		must(t, b.PublishEvent(ctx, m))
		ds, err := dl.Receive(ctx, 1)
		must(t, err)
		got := ds[0].Message
		reason := got.Extensions[driver.ExtDeadLetterReason]
		if !strings.Contains(reason, "cannot process this") || !strings.Contains(reason, "data cut") || !strings.Contains(reason, `header "X Bad" set aside`) {
			t.Fatalf("reason %q", reason)
		}
		if got.Header["Good"][0] != "2" || got.ID != m.ID || len(got.Data) >= 4000 {
			t.Fatalf("dead letter lost what fits: %+v", got)
		}
		must(t, dl.Ack(ctx, ds))
		if calls.Load() != 1 {
			t.Fatalf("handler ran %d times", calls.Load())
		}
	})

	t.Run("dropped", func(t *testing.T) {
		b := startedBus(t, refusingDeadLetters{broker.Connect()}, &eventbus.Options{Retry: fastRetry})
		var calls atomic.Int64
		must(t, errOnly(b.SubscribeEvents(ctx, []string{"doomed"}, "g", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
			calls.Add(1)
			return errors.New("fails")
		}))))
		must(t, b.PublishEvent(ctx, event(t, "doomed", 1)))
		waitFor(t, func() bool { return b.Stats().Dropped == 1 })
		time.Sleep(200 * time.Millisecond) // a redelivery loop would show by now
		if n := calls.Load(); n != int64(fastRetry.MaxAttempts) {
			t.Fatalf("handler ran %d times, want %d", n, fastRetry.MaxAttempts)
		}
	})
}
