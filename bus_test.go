package eventbus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The patterns over the in-memory driver, with its native request/reply and
// with the bus's generic reply-destination fallback.
func TestPatternsOnMembus(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	drivertest.RunBusTests(t, drivertest.Harness{Open: func(context.Context) (driver.Driver, error) {
		return broker.Connect(), nil
	}})
}

func TestPatternsOnMembusWithoutNativeRequestReply(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	drivertest.RunBusTests(t, drivertest.Harness{Open: func(context.Context) (driver.Driver, error) {
		return withoutNative{broker.Connect()}, nil
	}})
}

// withoutNative hides a driver's native request/reply, so that the bus uses
// its generic reply-destination fallback.
type withoutNative struct{ driver.Driver }

func (w withoutNative) Capabilities() driver.Capabilities {
	c := w.Driver.Capabilities()
	c.NativeRequestReply = false
	return c
}

// fastRetry keeps redelivery tests short.
var fastRetry = eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

// errOnly drops the subscription of a subscribe call whose subscription
// lives as long as its bus.
func errOnly(_ *eventbus.Subscription, err error) error { return err }

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

func TestStreamPartialBatchFlushedOnClose(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var handled atomic.Int64
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, errOnly(b.ProcessStream(context.Background(), "clicks", "analytics", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
		handled.Add(int64(len(ms)))
		return nil
	}), &eventbus.BatchOptions{Size: 100, MaxWait: time.Hour})))
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
	must(t, errOnly(b.SubscribeEvents(context.Background(), []string{"account.changed"}, "ledger", h, eventbus.WithConcurrency(4))))
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

// poisoning marks deliveries of type "poison" as unreadable, as a driver does
// with bytes that are no envelope.
type poisoning struct{ *membus.Driver }

func (p poisoning) Subscribe(ctx context.Context, dest driver.Destination, o driver.SubscribeOptions) (driver.Subscription, error) {
	s, err := p.Driver.Subscribe(ctx, dest, o)
	return poisonedSub{s}, err
}

type poisonedSub struct{ driver.Subscription }

func (s poisonedSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	ds, err := s.Subscription.Receive(ctx, max)
	for _, d := range ds {
		if d.Message.Type == "poison" {
			d.Err = &driver.MalformedError{Reason: "missing ce-id header"}
		}
	}
	return ds, err
}

func TestMalformedDeliveriesAreDeadLetteredNotHandled(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	inspector := broker.Connect()
	defer inspector.Close(context.Background())
	dlq, err := inspector.Subscribe(ctxT(t), driver.DeadLetterOf(driver.NewDestination(driver.Event, "poison")), driver.SubscribeOptions{})
	must(t, err)
	var handled atomic.Int64
	b := eventbus.New(nil)
	must(t, b.Register("mem", poisoning{broker.Connect()}))
	must(t, errOnly(b.SubscribeEvents(context.Background(), []string{"poison"}, "g", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		handled.Add(1)
		return nil
	}))))
	must(t, b.Start(ctxT(t)))
	defer b.Close(context.Background())
	must(t, b.PublishEvent(ctxT(t), &eventbus.Message{Type: "poison", Data: []byte{0xde, 0xad}}))
	ds, err := dlq.Receive(ctxT(t), 1)
	must(t, err)
	if r := ds[0].Message.Extensions[driver.ExtDeadLetterReason]; !strings.Contains(r, "missing ce-id header") || string(ds[0].Message.Data) != "\xde\xad" {
		t.Fatalf("dead letter %+v", ds[0].Message)
	}
	if handled.Load() != 0 {
		t.Fatal("the handler saw a malformed message")
	}
}

// noRedelivery presents a broker that never redelivers, as core NATS is.
type noRedelivery struct{ *membus.Driver }

func (n noRedelivery) Capabilities() driver.Capabilities {
	c := n.Driver.Capabilities()
	c.Redelivery, c.NativeDelay, c.Durable = false, false, false
	return c
}

// Without broker redelivery the bus retries in place: a failing handler still
// gets its attempts, and nothing is lost to a nack the broker would ignore.
func TestRetriesInPlaceWithoutRedelivery(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	var calls atomic.Int64
	done := make(chan int, 1)
	b := eventbus.New(&eventbus.Options{Retry: fastRetry})
	must(t, b.Register("core", noRedelivery{broker.Connect()}))
	must(t, errOnly(b.HandleCommand(context.Background(), "mailer", "send", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		if n := calls.Add(1); n < 3 {
			return errors.New("smtp busy")
		}
		done <- int(calls.Load())
		return nil
	}))))
	must(t, b.Start(ctxT(t)))
	defer b.Close(context.Background())
	must(t, b.SendCommand(ctxT(t), "mailer", event(t, "send", "hi")))
	select {
	case n := <-done:
		if n != 3 {
			t.Fatalf("handled on call %d, want 3", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("never succeeded after %d calls", calls.Load())
	}
}
