package natsbus_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// startBus starts a bus on one driver of cfg, with routes, subscribed by
// subscribe; closed when the test ends.
func startBus(t *testing.T, cfg *natsbus.Config, routes []eventbus.Route, subscribe func(*eventbus.Bus) error) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(&eventbus.Options{Routes: routes})
	if err := b.Register("nats", openDriver(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if subscribe != nil {
		if err := subscribe(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Start(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// keyedLog records, per key, the sequence numbers a handler saw.
type keyedLog struct {
	mu    sync.Mutex
	seen  map[string][]int
	total int
}

func (l *keyedLog) Handle(_ context.Context, m *eventbus.Message) error {
	n, err := strconv.Atoi(string(m.Data))
	if err != nil {
		return eventbus.Permanent(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[m.Key] = append(l.seen[m.Key], n)
	l.total++
	return nil
}

func (l *keyedLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in 60s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publishKeyed publishes perKey messages for each key, one goroutine per
// key, through p, and returns every result.
func publishKeyed(t *testing.T, p *eventbus.Publisher, keys []string, perKey int) []*eventbus.PublishResult {
	var mu sync.Mutex
	var all []*eventbus.PublishResult
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Go(func() {
			for i := range perKey {
				m := &eventbus.Message{Type: "ledger.changed", Key: key, Data: []byte(strconv.Itoa(i))}
				r := p.PublishEvent(ctxFor(t, time.Minute), m)
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return all
}

// On JetStream every result reports the stream's acknowledgement, and the
// consumer sees each key's messages in publish order.
func TestPublisherOnJetStream(t *testing.T) {
	srv := startServer(t, nil)
	log := &keyedLog{seen: map[string][]int{}}
	startBus(t, serverConfig(srv), nil, func(b *eventbus.Bus) error {
		_, err := b.SubscribeEvents(context.Background(), []string{"ledger.changed"}, "ledger", log, eventbus.WithConcurrency(4))
		return err
	})
	pub := startBus(t, serverConfig(srv), nil, nil)
	p := pub.NewPublisher(&eventbus.PublisherOptions{Window: 256, MaxBatch: 64})
	keys := []string{"a", "b", "c", "d"}
	const perKey = 500
	results := publishKeyed(t, p, keys, perKey)
	if err := p.Flush(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if err := r.Wait(ctxFor(t, time.Second)); err != nil {
			t.Fatalf("message %s: %v", r.Message.ID, err)
		}
	}
	// An oversize message fails alone, with its typed error.
	big := p.PublishEvent(ctxFor(t, time.Minute), &eventbus.Message{Type: "ledger.changed", Key: "a", Data: make([]byte, 2<<20)})
	if err := big.Err(); !errors.Is(err, eventbus.ErrTooLarge) {
		t.Fatalf("oversize: %v, want ErrTooLarge", err)
	}
	if err := p.Close(ctxFor(t, time.Minute)); !errors.Is(err, eventbus.ErrTooLarge) {
		t.Fatalf("Close: %v, want the oversize failure reported", err)
	}
	waitUntil(t, "every message consumed", func() bool { return log.count() >= len(keys)*perKey })
	log.mu.Lock()
	defer log.mu.Unlock()
	for k, vs := range log.seen {
		if len(vs) != perKey || !slices.IsSorted(vs) {
			t.Fatalf("key %s: %d messages (want %d), in order: %v", k, len(vs), perKey, slices.IsSorted(vs))
		}
	}
}

// An at-most-once route on core NATS publishes without flushing; what the
// subscriber receives arrives in order per key.
func TestPublisherAtMostOnceOnCoreNATS(t *testing.T) {
	srv := startServer(t, nil)
	off := false
	cfg := serverConfig(srv)
	cfg.Options.JetStream = &off
	routes := []eventbus.Route{{Pattern: eventbus.EventPattern, Backend: "nats", Delivery: eventbus.AtMostOnce}}
	log := &keyedLog{seen: map[string][]int{}}
	startBus(t, cfg, routes, func(b *eventbus.Bus) error {
		_, err := b.SubscribeEvents(context.Background(), []string{"ledger.changed"}, "ledger", log)
		return err
	})
	pub := startBus(t, cfg, routes, nil)
	p := pub.NewPublisher(nil)
	keys := []string{"a", "b"}
	const perKey = 200
	results := publishKeyed(t, p, keys, perKey)
	if err := p.Close(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing is lost on a healthy loopback connection with a keen
	// subscriber; the delivery is still only at most once.
	waitUntil(t, "the messages written", func() bool { return log.count() >= len(keys)*perKey })
	log.mu.Lock()
	defer log.mu.Unlock()
	for k, vs := range log.seen {
		if !slices.IsSorted(vs) {
			t.Fatalf("key %s out of order", k)
		}
	}
}

// Exactly-once needs the streams' de-duplication: JetStream gives it, core
// NATS does not.
func TestExactlyOnceNeedsDeduplication(t *testing.T) {
	srv := startServer(t, nil)
	routes := []eventbus.Route{{Pattern: eventbus.EventPattern, Backend: "nats", Delivery: eventbus.ExactlyOnce}}
	startBus(t, serverConfig(srv), routes, nil)

	off := false
	cfg := serverConfig(srv)
	cfg.Options.JetStream = &off
	b := eventbus.New(&eventbus.Options{Routes: routes})
	if err := b.Register("nats", openDriver(t, cfg)); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if err := b.Start(ctxFor(t, time.Minute)); !errors.Is(err, eventbus.ErrCapability) {
		t.Fatalf("exactly-once on core NATS: Start = %v, want ErrCapability", err)
	}
}
