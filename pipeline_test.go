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

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// Every message gets its own confirmed result, and messages with the same
// key are handled in the order they were published, while several
// goroutines share the Publisher.
func TestPublisherResultsAndOrderPerKey(t *testing.T) {
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

	var settled atomic.Int64
	p := b.NewPublisher(&eventbus.PublisherOptions{Window: 64, MaxBatch: 16, OnResult: func(*eventbus.Message, error) { settled.Add(1) }})
	keys := []string{"a", "b", "c", "d", "e"}
	const perKey = 300
	var wg sync.WaitGroup
	results := make([][]*eventbus.PublishResult, len(keys))
	for k, key := range keys {
		wg.Go(func() {
			for i := range perKey {
				m := event(t, "account.changed", i)
				m.Key = key
				results[k] = append(results[k], p.PublishEvent(ctxT(t), m))
			}
		})
	}
	wg.Wait()
	must(t, p.Flush(ctxT(t)))
	for _, rs := range results {
		for _, r := range rs {
			select {
			case <-r.Done():
			default:
				t.Fatal("a result is not done after Flush")
			}
			if err := r.Err(); err != nil {
				t.Fatalf("message %s: %v", r.Message.ID, err)
			}
		}
	}
	if got := settled.Load(); got != int64(len(keys)*perKey) {
		t.Fatalf("OnResult called %d times, want %d", got, len(keys)*perKey)
	}
	must(t, p.Close(ctxT(t)))
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return total == len(keys)*perKey })
	mu.Lock()
	defer mu.Unlock()
	for k, vs := range seen {
		if len(vs) != perKey || !slices.IsSorted(vs) {
			t.Fatalf("key %s: %d messages, in order: %v", k, len(vs), slices.IsSorted(vs))
		}
	}
}

// gated holds every Publish until released (or its context ends), and
// counts the messages held.
type gated struct {
	*membus.Driver
	release chan struct{}
	held    atomic.Int64
	maxHeld atomic.Int64
	batches atomic.Int64
}

func newGated(d *membus.Driver) *gated { return &gated{Driver: d, release: make(chan struct{})} }

func (g *gated) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	n := g.held.Add(int64(len(msgs)))
	for {
		m := g.maxHeld.Load()
		if n <= m || g.maxHeld.CompareAndSwap(m, n) {
			break
		}
	}
	g.batches.Add(1)
	defer g.held.Add(-int64(len(msgs)))
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Driver.Publish(ctx, dest, msgs)
}

// The window bounds what is accepted and not settled: a publish waits for
// room, its context ending first fails it, and no more than the window
// reaches the backend at once.
func TestPublisherWindowBound(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	g := newGated(broker.Connect())
	b := startedBus(t, g, nil)
	const window = 8
	p := b.NewPublisher(&eventbus.PublisherOptions{Window: window, Lanes: 2})
	var rs []*eventbus.PublishResult
	for i := range window {
		rs = append(rs, p.PublishEvent(ctxT(t), event(t, "order.placed", i)))
	}
	waitFor(t, func() bool { return g.held.Load() > 0 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	over := p.PublishEvent(ctx, event(t, "order.placed", window))
	if err := over.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("publish beyond a full window: %v, want context.Canceled", err)
	}
	for _, r := range rs {
		select {
		case <-r.Done():
			t.Fatalf("result done before the backend confirmed: %v", r.Err())
		default:
		}
	}
	close(g.release)
	err := p.Flush(ctxT(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush: %v, want the one failure (context.Canceled)", err)
	}
	for _, r := range rs {
		must(t, r.Wait(ctxT(t)))
	}
	if m := g.maxHeld.Load(); m > window {
		t.Fatalf("%d messages in flight on the backend, window %d", m, window)
	}
	// Once settled, the window has room again.
	for i := range 3 * window {
		p.PublishEvent(ctxT(t), event(t, "order.placed", i))
	}
	must(t, p.Close(ctxT(t)))
	if m := g.maxHeld.Load(); m > window {
		t.Fatalf("%d messages in flight on the backend, window %d", m, window)
	}
}

// A message the backend would refuse fails alone, with its typed error;
// the others of the same burst are published.
func TestPublisherTypedErrorsPerMessage(t *testing.T) {
	broker := membus.New(&membus.Options{MaxMessageSize: 1024})
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), nil)
	p := b.NewPublisher(nil)
	defer p.Close(context.Background())
	good := p.PublishEvent(ctxT(t), event(t, "order.placed", 1))
	big := &eventbus.Message{Type: "order.placed", Data: make([]byte, 4096)}
	tooLarge := p.PublishEvent(ctxT(t), big)
	bad := event(t, "order.placed", 2)
	bad.Header = map[string][]string{"bad header": {"x"}}
	invalid := p.PublishEvent(ctxT(t), bad)
	noType := p.PublishEvent(ctxT(t), &eventbus.Message{})
	good2 := p.PublishEvent(ctxT(t), event(t, "order.placed", 3))
	must(t, good.Err())
	must(t, good2.Err())
	if err := tooLarge.Err(); !errors.Is(err, eventbus.ErrTooLarge) {
		t.Fatalf("oversize: %v, want ErrTooLarge", err)
	}
	var tl *driver.TooLargeError
	if !errors.As(tooLarge.Err(), &tl) || tl.Limit != 1024 {
		t.Fatalf("oversize: %v, want a *driver.TooLargeError with the limit", tooLarge.Err())
	}
	if err := invalid.Err(); !errors.Is(err, eventbus.ErrInvalid) {
		t.Fatalf("bad header: %v, want ErrInvalid", err)
	}
	if err := noType.Err(); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Fatalf("no type: %v, want ErrInvalidName", err)
	}
	err := p.Flush(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "3 publishes failed") {
		t.Fatalf("Flush: %v, want the 3 failures", err)
	}
	must(t, p.Flush(ctxT(t))) // reported once
}

// Close stops intake and returns only once every accepted message settled.
func TestPublisherCloseWaits(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	g := newGated(broker.Connect())
	b := startedBus(t, g, nil)
	rec := newRecorder()
	must(t, errOnly(b.SubscribeEvents(ctxT(t), []string{"order.placed"}, "", rec)))
	p := b.NewPublisher(nil)
	var rs []*eventbus.PublishResult
	for i := range 5 {
		rs = append(rs, p.PublishEvent(ctxT(t), event(t, "order.placed", i)))
	}
	waitFor(t, func() bool { return g.held.Load() > 0 })
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctxT(t)) }()
	// Close has begun once new publishes are refused.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	waitFor(t, func() bool {
		return errors.Is(p.PublishEvent(done, event(t, "order.placed", 99)).Err(), eventbus.ErrClosed)
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with publishes outstanding", err)
	default:
	}
	close(g.release)
	select {
	case err := <-closed:
		// The refused publishes above are failures Close reports.
		if !errors.Is(err, eventbus.ErrClosed) && !errors.Is(err, context.Canceled) {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return once the backend confirmed")
	}
	for _, r := range rs {
		select {
		case <-r.Done():
			must(t, r.Err())
		default:
			t.Fatal("Close returned before a result was settled")
		}
	}
	rec.wait(t, 5)
	must(t, p.Close(ctxT(t))) // again: nothing more
}

// When Close's context ends first, the sends in flight are cancelled and
// their results say so.
func TestPublisherCloseDeadlineCancelsSends(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	g := newGated(broker.Connect())
	b := startedBus(t, g, nil)
	p := b.NewPublisher(nil)
	r := p.PublishEvent(ctxT(t), event(t, "order.placed", 1))
	waitFor(t, func() bool { return g.held.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want DeadlineExceeded", err)
	}
	if err := r.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("result: %v, want the send cancelled", err)
	}
}

func TestPublisherBeforeStart(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	defer b.Close(context.Background())
	p := b.NewPublisher(nil)
	defer p.Close(context.Background())
	if err := p.PublishEvent(ctxT(t), event(t, "order.placed", 1)).Err(); !errors.Is(err, eventbus.ErrNotStarted) {
		t.Fatalf("publish before Start: %v, want ErrNotStarted", err)
	}
}

// Start refuses a delivery guarantee the backend cannot give.
func TestDeliveryGuaranteeChecked(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	for _, tc := range []struct {
		route eventbus.Route
		ok    bool
	}{
		{eventbus.Route{Pattern: eventbus.EventPattern, Backend: "mem", Delivery: eventbus.AtMostOnce}, true},
		{eventbus.Route{Pattern: eventbus.EventPattern, Backend: "mem", Delivery: eventbus.AtLeastOnce}, true},
		{eventbus.Route{Pattern: eventbus.EventPattern, Backend: "mem", Delivery: eventbus.ExactlyOnce}, false},
		{eventbus.Route{Pattern: eventbus.BroadcastPattern, Backend: "mem", Delivery: eventbus.ExactlyOnce}, false},
		{eventbus.Route{Backend: "mem", Delivery: eventbus.DeliveryGuarantee(9)}, false},
	} {
		b := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{tc.route}})
		must(t, b.Register("mem", broker.Connect()))
		err := b.Start(ctxT(t))
		var ce *eventbus.ConfigError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s %v: %v", tc.route, tc.route.Delivery, err)
		case !tc.ok && !errors.As(err, &ce):
			t.Errorf("%s %v: Start = %v, want a *ConfigError", tc.route, tc.route.Delivery, err)
		case !tc.ok && tc.route.Delivery == eventbus.ExactlyOnce && !errors.Is(err, eventbus.ErrCapability):
			t.Errorf("%s %v: %v, want ErrCapability", tc.route, tc.route.Delivery, err)
		}
		must(t, b.Close(ctxT(t)))
	}
}
