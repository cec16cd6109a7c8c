package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

type collected struct {
	mu  sync.Mutex
	ids []string
}

func (c *collected) Handle(_ context.Context, m *eventbus.Message) error {
	c.mu.Lock()
	c.ids = append(c.ids, m.ID)
	c.mu.Unlock()
	return nil
}

func (c *collected) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func order(t *testing.T, id string, amount int, region string) *eventbus.Message {
	t.Helper()
	m, err := eventbus.NewMessage("order.created", map[string]any{"amount": amount})
	if err != nil {
		t.Fatal(err)
	}
	m.ID = id
	m.Extensions = map[string]string{"region": region}
	return m
}

// Filters of each dialect and CESQL on data, through the Bus on JetStream:
// only matching messages reach the handler; the others are acked (nothing is
// redelivered nor dead-lettered) and counted.
func TestBusFilterOnNATS(t *testing.T) {
	srv := startServer(t, nil)
	ctx := ctxFor(t, 2*time.Minute)
	b := eventbus.New(nil)
	if err := b.Register("nats", openDriver(t, serverConfig(srv))); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())

	got := &collected{}
	_, err := b.SubscribeEvents(ctx, []string{"order.created"}, "billing", got,
		eventbus.WithFilter(eventbus.All(
			eventbus.Any(eventbus.Exact("region", "eu"), eventbus.Prefix("region", "apac-")),
			eventbus.Not(eventbus.Suffix("id", "-test")),
			eventbus.SQL("INT(DATA('amount')) >= 10 AND INT(DATA('amount')) <= 1000"),
		)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeEvents(ctx, []string{"order.created"}, "g2", got, eventbus.WithFilter(eventbus.SQL("region = "))); !errors.Is(err, eventbus.ErrInvalidFilter) {
		t.Fatalf("syntax error: %v", err)
	}

	var want []string
	regions := []string{"eu", "us", "apac-sg", "apac"}
	for i := range 48 {
		id := fmt.Sprintf("n%02d", i)
		if i%7 == 6 {
			id += "-test"
		}
		region, amount := regions[i%4], []int{5, 50, 5000}[i%3]
		if (region == "eu" || region == "apac-sg") && i%7 != 6 && amount == 50 {
			want = append(want, id)
		}
		if err := b.PublishEvent(ctx, order(t, id, amount, region)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishEvent(ctx, order(t, "last", 100, "eu")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "last")
	eventually(t, "the last order", func() bool { return slices.Contains(got.list(), "last") })
	if ids := got.list(); !slices.Equal(ids, want) {
		t.Fatalf("delivered %v\nwant      %v", ids, want)
	}
	st := b.Stats()
	if st.Filtered != uint64(49-len(want)) || st.DeadLettered != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v, want Filtered %d and no failure", st, 49-len(want))
	}
}

// recordingTarget is a membus connection that records what it confirmed.
// latency simulates a slower target, so that the kill finds work in flight.
type recordingTarget struct {
	*membus.Driver
	mu      *sync.Mutex
	seen    map[string]int
	latency time.Duration
}

func (r recordingTarget) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if r.latency > 0 {
		t := time.NewTimer(r.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err := r.Driver.Publish(ctx, dest, msgs); err != nil {
		return err
	}
	r.mu.Lock()
	for _, m := range msgs {
		r.seen[m.ID]++
	}
	r.mu.Unlock()
	return nil
}

// A bridge from JetStream to membus, killed mid-stream (its bus closed with
// a deadline already passed) and restarted, loses nothing: every message
// the producer published was confirmed by the target.
func TestBridgeNATSToMembusKilledMidStream(t *testing.T) {
	srv := startServer(t, nil)
	ctx := ctxFor(t, 3*time.Minute)
	mem := membus.New(nil)
	defer mem.Close(context.Background())
	var mu sync.Mutex
	seen := map[string]int{}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }

	startBridge := func(latency time.Duration) *eventbus.Bus {
		b := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{{Backend: "nats"}}})
		if err := b.Register("nats", openDriver(t, serverConfig(srv))); err != nil {
			t.Fatal(err)
		}
		if err := b.Register("mem", recordingTarget{Driver: mem.Connect(), mu: &mu, seen: seen, latency: latency}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Bridge(ctx, eventbus.Bridge{From: "nats", To: "mem", Pattern: eventbus.EventPattern, Name: "order.created"},
			eventbus.WithConcurrency(4)); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	producer := eventbus.New(nil)
	if err := producer.Register("nats", openDriver(t, serverConfig(srv))); err != nil {
		t.Fatal(err)
	}
	if err := producer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer producer.Close(context.Background())
	// The group exists before anything is published, so nothing predates it.
	if err := producer.DeclareEventGroup(ctx, []string{"order.created"}, "bridge-mem"); err != nil {
		t.Fatal(err)
	}

	b1 := startBridge(5 * time.Millisecond)
	const n = 300
	for i := range n {
		if err := producer.PublishEvent(ctx, order(t, fmt.Sprint("k", i), i, "eu")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the bridge to be mid-stream", func() bool { return count() >= 20 })
	killed, cancel := context.WithCancel(ctx)
	cancel()
	_ = b1.Close(killed) // may report the interrupted handlers
	before := count()

	b2 := startBridge(0)
	defer b2.Close(context.Background())
	eventually(t, "every message at the target", func() bool { return count() == n })
	t.Logf("forwarded %d before the kill, %d after", before, n-before)
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if seen[fmt.Sprint("k", i)] == 0 {
			t.Errorf("k%d lost", i)
		}
	}
}
