package rabbitbus_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// regionEvents publishes n events to dest whose region extension cycles
// through regions, every fourth in structured mode, and returns the ids
// of each region in publish order.
func regionEvents(t *testing.T, ctx context.Context, d driver.Driver, dest driver.Destination, tag string, n int, regions ...string) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	msgs := make([]*driver.Message, 0, n)
	for i := range n {
		r := regions[i%len(regions)]
		id := fmt.Sprintf("%s-%02d-%s", tag, i, r)
		m := &driver.Message{ID: id, Source: "/test", Type: dest.Name[len("events."):], Data: []byte("{}"),
			DataContentType: "application/json", Extensions: map[string]string{"region": r}}
		if i%4 == 3 {
			m.Mode = driver.Structured
		}
		msgs = append(msgs, m)
		ids[r] = append(ids[r], id)
	}
	if err := d.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	return ids
}

// openDriver opens a driver on b that the test closes.
func openDriver(t *testing.T, ctx context.Context, b *broker) *rabbitbus.Driver {
	t.Helper()
	d, err := rabbitbus.Open(ctx, b.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

// rawChannel is a plain amqp091 channel on url, as another program has.
func rawChannel(t *testing.T, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// queueDepth is the broker's count of ready messages in queue.
func queueDepth(t *testing.T, url, queue string) int {
	t.Helper()
	q, err := rawChannel(t, url).QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue %s: %v", queue, err)
	}
	return q.Messages
}

// receiveIDs receives and acks n deliveries, and then checks that no more
// arrive within a short while.
func receiveIDs(t *testing.T, ctx context.Context, sub driver.Subscription, n int) []string {
	t.Helper()
	var ids []string
	for len(ids) < n {
		ds, err := sub.Receive(ctx, n-len(ids))
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(ids), n, err)
		}
		for _, d := range ds {
			if d.Err != nil {
				t.Fatalf("delivery %v: %v", d.Message.ID, d.Err)
			}
			ids = append(ids, d.Message.ID)
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ds, err := sub.Receive(short, 10); err == nil {
		t.Errorf("delivered beyond the selection: %s", ds[0].Message.ID)
	}
	return ids
}

func TestAttributeSelectCapability(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 30*time.Second)
	d := openDriver(t, ctx, b)
	if !d.Capabilities().AttributeSelect {
		t.Error("Capabilities.AttributeSelect is false")
	}
}

// TestAttributeSelect: a group's queue with a selection receives, of events
// that differ in an extension, only those whose extension matches (the
// broker's count of the queue shows it, before any consumer reads), binary
// and structured alike; the subscription delivers exactly those, in
// order. A private subscription is selected the same way.
func TestAttributeSelect(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 60*time.Second)
	d := openDriver(t, ctx, b)
	dest := driver.NewDestination(driver.Event, "order", "created")
	opts := driver.SubscribeOptions{Group: "eu-billing", Durable: true,
		Select: []driver.AttributeMatch{{Name: "region", Value: "eu"}}}
	sub, err := d.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	private, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Select: opts.Select})
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close(ctx)
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ids := regionEvents(t, ctx, d, dest, "a", 30, "eu", "us", "apac")
	queue, err := d.QueueName(dest, opts.Group)
	if err != nil {
		t.Fatal(err)
	}
	if n := queueDepth(t, b.url, queue); n != len(ids["eu"]) {
		t.Fatalf("the group's queue holds %d messages, want the %d of region eu", n, len(ids["eu"]))
	}
	sub, err = d.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	if got := receiveIDs(t, ctx, sub, len(ids["eu"])); !slices.Equal(got, ids["eu"]) {
		t.Errorf("group received %v\nwant %v", got, ids["eu"])
	}
	if got := receiveIDs(t, ctx, private, len(ids["eu"])); !slices.Equal(got, ids["eu"]) {
		t.Errorf("private subscription received %v\nwant %v", got, ids["eu"])
	}
}

// TestAttributeSelectForeignPublisher: events another program publishes
// in binary mode with either prefix of the binding are selected like ours.
func TestAttributeSelectForeignPublisher(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 30*time.Second)
	d := openDriver(t, ctx, b)
	dest := driver.NewDestination(driver.Event, "payment", "settled")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "ledger",
		Select: []driver.AttributeMatch{{Name: "tenant", Value: "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	ch := rawChannel(t, b.url)
	var want []string
	for i, p := range []string{"cloudEvents:", "cloudEvents_", "cloudEvents:", "cloudEvents_"} {
		tenant := []string{"acme", "acme", "other", "other"}[i]
		id := fmt.Sprint("p-", i)
		if tenant == "acme" {
			want = append(want, id)
		}
		err := ch.PublishWithContext(ctx, d.ExchangeName(driver.Event), dest.Name, false, false, amqp.Publishing{
			ContentType: "text/plain", Body: []byte("x"), Headers: amqp.Table{
				p + "specversion": "1.0", p + "id": id, p + "source": "/java", p + "type": "payment.settled", p + "tenant": tenant}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := receiveIDs(t, ctx, sub, len(want)); !slices.Equal(got, want) {
		t.Errorf("received %v, want %v", got, want)
	}
}

// TestAttributeSelectFollowsLatest: the bindings of a group's queue follow
// the latest subscription: a new selection replaces the old one, no
// selection restores the routing-key binding, and of two members with
// different selections the one that subscribed last decides what the
// queue receives (the bus still filters each member by its own filter).
func TestAttributeSelectFollowsLatest(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 60*time.Second)
	d := openDriver(t, ctx, b)
	dest := driver.NewDestination(driver.Event, "order", "shipped")
	queue, err := d.QueueName(dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	region := func(r string) []driver.AttributeMatch { return []driver.AttributeMatch{{Name: "region", Value: r}} }
	subscribe := func(sel []driver.AttributeMatch) driver.Subscription {
		t.Helper()
		sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true, Select: sel})
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	depth := 0
	for i, step := range []struct {
		sel     []driver.AttributeMatch
		arrives string // the region that reaches the queue; "" for all
	}{
		{region("eu"), "eu"},
		{region("us"), "us"},
		{nil, ""},
		{region("apac"), "apac"},
		{[]driver.AttributeMatch{{Name: "region", Value: "us"}, {Name: "source", Value: "/test"}}, "us"},
	} {
		if err := subscribe(step.sel).Close(ctx); err != nil {
			t.Fatal(err)
		}
		ids := regionEvents(t, ctx, d, dest, fmt.Sprint("s", i), 12, "eu", "us", "apac")
		if step.arrives == "" {
			depth += 12
		} else {
			depth += len(ids[step.arrives])
		}
		if n := queueDepth(t, b.url, queue); n != depth {
			t.Fatalf("step %d (select %v): the queue holds %d messages, want %d", i, step.sel, n, depth)
		}
	}

	// Two members, different selections: the later one holds. Each member's
	// share is what the queue receives.
	drain := subscribe(nil)
	receiveIDs(t, ctx, drain, depth)
	if err := drain.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eu := subscribe(region("eu"))
	us := subscribe(region("us"))
	ids := regionEvents(t, ctx, d, dest, "m", 12, "eu", "us", "apac")
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	for _, sub := range []driver.Subscription{eu, us} {
		wg.Go(func() {
			for {
				ds, err := sub.Receive(rctx, 10)
				if err != nil {
					return
				}
				_ = sub.Ack(ctx, ds)
				mu.Lock()
				for _, d := range ds {
					got = append(got, d.Message.ID)
				}
				mu.Unlock()
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(ids["us"]) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	// What was routed to the queue and not handed out goes back to it.
	for _, sub := range []driver.Subscription{eu, us} {
		if err := sub.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := queueDepth(t, b.url, queue); n != 0 {
		t.Errorf("%d more messages reached the queue", n)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(ids["us"]))
	if !slices.Equal(got, want) {
		t.Errorf("the members received %v, want the latest selection's %v", got, want)
	}
}

// TestAttributeSelectConcurrentMembers: members of one group subscribing
// at once from two drivers (two processes, for the broker) with the same
// selection take turns changing the bindings, so the queue is never left
// without one: afterwards it receives exactly the selected events.
func TestAttributeSelectConcurrentMembers(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 60*time.Second)
	drivers := []*rabbitbus.Driver{openDriver(t, ctx, b), openDriver(t, ctx, b)}
	dest := driver.NewDestination(driver.Event, "order", "paid")
	opts := driver.SubscribeOptions{Group: "g", Durable: true, Select: []driver.AttributeMatch{{Name: "region", Value: "eu"}}}
	subs := make([]driver.Subscription, 6)
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i := range subs {
		wg.Go(func() { subs[i], errs[i] = drivers[i%2].Subscribe(ctx, dest, opts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if err := subs[i].Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ids := regionEvents(t, ctx, drivers[0], dest, "c", 20, "eu", "us")
	queue, err := drivers[0].QueueName(dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	if n := queueDepth(t, b.url, queue); n != len(ids["eu"]) {
		t.Errorf("the queue holds %d messages, want the %d of region eu", n, len(ids["eu"]))
	}
}

// TestBusFilterPushedDown: through the bus, an Exact filter on an
// extension is applied by the broker: the handler receives exactly the
// matching events, in order, and Stats.Filtered stays 0 because nothing
// else reached the process. A filter the broker cannot apply (Prefix)
// runs in the bus on what arrives.
func TestBusFilterPushedDown(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 60*time.Second)
	d, err := rabbitbus.Open(ctx, b.config())
	if err != nil {
		t.Fatal(err)
	}
	bus := eventbus.New(nil)
	if err := bus.Register("rabbit", d); err != nil {
		t.Fatal(err)
	}
	defer bus.Close(context.Background())
	var mu sync.Mutex
	var got []string
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		mu.Lock()
		got = append(got, m.ID)
		mu.Unlock()
		return nil
	})
	if _, err := bus.SubscribeEvents(ctx, []string{"order.created"}, "eu-billing", h,
		eventbus.WithFilter(eventbus.All(eventbus.Exact("region", "eu"), eventbus.Prefix("subject", "orders/")))); err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 40 {
		r := []string{"eu", "us", "apac", "us", "apac"}[i%5]
		m, err := eventbus.NewMessage("order.created", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		m.ID = fmt.Sprintf("o%02d-%s", i, r)
		m.Subject = "orders/" + m.ID
		if i == 10 {
			m.Subject = "refunds/" + m.ID // selected by the broker, filtered out by the bus
		}
		m.Extensions = map[string]string{"region": r}
		if r == "eu" && i != 10 {
			want = append(want, m.ID)
		}
		if err := bus.PublishEvent(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) && bus.Stats().Filtered >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("handled %v\nwant    %v", got, want)
	}
	if f := bus.Stats().Filtered; f != 1 {
		t.Errorf("Stats.Filtered = %d, want 1 (only the eu event the Prefix leaves out reached the process)", f)
	}
}
