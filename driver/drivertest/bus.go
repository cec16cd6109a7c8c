package drivertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
)

// RunBusTests runs every messaging pattern of the eventbus Bus over the
// driver that h opens, each bus on its own connection playing one service
// instance: events with competing and fanned-out groups, commands handled
// exactly once, queries with replies and typed errors, stream batches,
// broadcast, retries ending in the dead-letter destination, and durable
// groups that resume after a restart; and subscriptions opened and closed
// while the bus runs, settlement that keeps up with slow handlers, a close
// that gives back and keeps its deadline, and dead letters cut to fit.
// Patterns the driver does not serve are skipped with the capability named.
func RunBusTests(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("drivertest: Harness.Open is nil")
	}
	s := &suite{h: h}
	d := s.open(t)
	s.caps = d.Capabilities()
	closeDriver(t, d)

	t.Run("Events", s.testBusEvents)
	t.Run("Commands", s.testBusCommands)
	t.Run("Query", s.testBusQuery)
	t.Run("StreamBatches", s.testBusStream)
	t.Run("Broadcast", s.testBusBroadcast)
	t.Run("DeadLetter", s.testBusDeadLetter)
	t.Run("DurableGroupResumes", s.testBusDurable)
	t.Run("Subscriptions", s.runSubscriptionTests)
}

var busRetry = eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

// bus starts a bus on a new connection, after setup registered its handlers,
// and closes it when the test ends.
func (s *suite) bus(t *testing.T, name string, setup func(b *eventbus.Bus) error) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(&eventbus.Options{Source: name, Retry: busRetry, QueryTimeout: deliveryTimeout})
	if err := b.Register("backend", s.open(t)); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		if err := setup(b); err != nil {
			t.Fatalf("%s: register handlers: %v", name, err)
		}
	}
	if err := b.Start(timeout(t, opTimeout)); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

func closeBus(t *testing.T, b *eventbus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("close bus: %v", err)
	}
}

func (s *suite) requirePattern(t *testing.T, p driver.Pattern) {
	t.Helper()
	if !s.caps.Serves(p) {
		t.Skipf("driver does not serve pattern %s", p)
	}
}

// tally records handled messages by handler name.
type tally struct {
	mu   sync.Mutex
	seen map[string][]string // handler → message ids in handling order
	data map[string]string   // message id → data
	n    int
}

func newTally() *tally { return &tally{seen: map[string][]string{}, data: map[string]string{}} }

func (c *tally) handler(name string) eventbus.Handler {
	return eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.seen[name] = append(c.seen[name], m.ID)
		c.data[m.ID] = string(m.Data)
		c.n++
		return nil
	})
}

func (c *tally) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *tally) of(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen[name])
}

// await waits until cond holds, failing the test after deliveryTimeout.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonMessage(t *testing.T, typ string, v any) *eventbus.Message {
	t.Helper()
	m, err := eventbus.NewMessage(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *suite) testBusEvents(t *testing.T) {
	s.requirePattern(t, driver.Event)
	typ := "dt.order.created." + unique()
	billing, audit := "billing"+unique(), "audit"+unique()
	c := newTally()
	s.bus(t, "billing-1", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, billing, c.handler("billing-1")))
	})
	s.bus(t, "billing-2", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, billing, c.handler("billing-2")))
	})
	s.bus(t, "audit", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, audit, c.handler("audit")))
	})
	pub := s.bus(t, "orders", nil)
	const n = 100
	var sent []string
	for i := range n {
		m := jsonMessage(t, typ, map[string]int{"n": i})
		if err := pub.PublishEvent(timeout(t, opTimeout), m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		sent = append(sent, m.ID)
	}
	await(t, "every event in both groups", func() bool {
		return len(c.of("audit")) >= n && len(c.of("billing-1"))+len(c.of("billing-2")) >= n
	})
	time.Sleep(quietWindow)
	if got := c.of("audit"); !slices.Equal(sorted(got), sorted(sent)) {
		t.Fatalf("audit group got %d events, want each of the %d once", len(got), n)
	}
	if got := append(c.of("billing-1"), c.of("billing-2")...); !slices.Equal(sorted(got), sorted(sent)) {
		t.Fatalf("billing group (two members) handled %d events, want each of the %d exactly once", len(got), n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.data[sent[7]]; d != `{"n":7}` {
		t.Fatalf("event data %q", d)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func (s *suite) testBusCommands(t *testing.T) {
	s.requirePattern(t, driver.Command)
	service := "billing" + unique()
	c := newTally()
	for i := range 2 {
		name := fmt.Sprintf("billing-%d", i)
		s.bus(t, name, func(b *eventbus.Bus) error {
			return errOnly(b.HandleCommand(context.Background(), service, "charge", c.handler(name)))
		})
	}
	client := s.bus(t, "orders", nil)
	const n = 60
	var sent []string
	for i := range n {
		m := jsonMessage(t, "charge", i)
		if err := client.SendCommand(timeout(t, opTimeout), service, m); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m.ID)
	}
	await(t, "every command", func() bool { return c.total() >= n })
	time.Sleep(quietWindow)
	if got := append(c.of("billing-0"), c.of("billing-1")...); !slices.Equal(sorted(got), sorted(sent)) {
		t.Fatalf("the service's two instances handled %d commands, want each of the %d exactly once", len(got), n)
	}
}

type quote struct {
	SKU   string `json:"sku"`
	Cents int    `json:"cents"`
}

func (s *suite) testBusQuery(t *testing.T) {
	s.requirePattern(t, driver.Query)
	service := "catalog" + unique()
	s.bus(t, "catalog", func(b *eventbus.Bus) error {
		return errOnly(b.HandleQuery(context.Background(), service, "price.get", eventbus.TypedQuery(func(ctx context.Context, _ *eventbus.Message, sku string) (quote, error) {
			switch sku {
			case "missing":
				return quote{}, eventbus.Errorf("not_found", "no sku %s", sku)
			case "slow":
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				return quote{}, errors.New("too late")
			}
			return quote{SKU: sku, Cents: 100 * len(sku)}, nil
		})))
	})
	client := s.bus(t, "shop", nil)

	var wg sync.WaitGroup
	for i := range 8 {
		sku := strings.Repeat("x", i+1)
		wg.Go(func() {
			q, err := eventbus.Ask[quote](timeout(t, opTimeout), client, service, "price.get", sku)
			if err != nil || q.SKU != sku || q.Cents != 100*len(sku) {
				t.Errorf("Ask(%q) = %+v, %v", sku, q, err)
			}
		})
	}
	wg.Wait()

	_, err := eventbus.Ask[quote](timeout(t, opTimeout), client, service, "price.get", "missing")
	var remote *eventbus.RemoteError
	if !errors.As(err, &remote) || remote.Code != "not_found" || remote.Message != "no sku missing" {
		t.Fatalf("handler error: got %v, want RemoteError not_found", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = eventbus.Ask[quote](ctx, client, service, "price.get", "slow")
	if !errors.Is(err, eventbus.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow handler: got %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > promptly {
		t.Fatalf("timeout after %v", el)
	}

	if s.caps.NativeRequestReply {
		start = time.Now()
		_, err = eventbus.Ask[quote](timeout(t, opTimeout), client, "nobody"+unique(), "price.get", "x")
		if !errors.Is(err, eventbus.ErrNoResponders) {
			t.Fatalf("no responders: got %v", err)
		}
		if el := time.Since(start); el > promptly {
			t.Fatalf("no-responders took %v", el)
		}
	}
}

func (s *suite) testBusStream(t *testing.T) {
	s.requirePattern(t, driver.Stream)
	stream := "clicks" + unique()
	var mu sync.Mutex
	perKey := map[string][]int{}
	var sizes []int
	failed := false
	s.bus(t, "analytics", func(b *eventbus.Bus) error {
		return errOnly(b.ProcessStream(context.Background(), stream, "analytics", eventbus.TypedBatch(func(_ context.Context, ms []*eventbus.Message, vs []int) error {
			mu.Lock()
			defer mu.Unlock()
			if !failed && slices.Contains(vs, 42) {
				failed = true
				return errors.New("transient failure")
			}
			sizes = append(sizes, len(vs))
			for i, v := range vs {
				perKey[ms[i].Key] = append(perKey[ms[i].Key], v)
			}
			return nil
		}), &eventbus.BatchOptions{Size: 10, MaxWait: 200 * time.Millisecond}))
	})
	pub := s.bus(t, "web", nil)
	const n = 95
	keys := []string{"user-a", "user-b", "user-c"}
	var msgs []*eventbus.Message
	for i := range n {
		m := jsonMessage(t, "page.viewed", i)
		m.Key = keys[i%len(keys)]
		msgs = append(msgs, m)
	}
	for i := 0; i < n; i += 20 {
		if err := pub.PublishStream(timeout(t, opTimeout), stream, msgs[i:min(i+20, n)]...); err != nil {
			t.Fatal(err)
		}
	}
	handled := func() int {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, vs := range perKey {
			total += len(vs)
		}
		return total
	}
	await(t, "every stream message", func() bool { return handled() >= n })
	time.Sleep(quietWindow)
	mu.Lock()
	defer mu.Unlock()
	if !failed {
		t.Fatal("the failing batch never came")
	}
	var all []int
	for k, vs := range perKey {
		all = append(all, vs...)
		// The failed batch is redelivered whole, so a key's sequence may
		// repeat nothing and lose nothing; without failures it is ordered.
		if len(vs) != len(slices.Compact(sortedInts(vs))) {
			t.Fatalf("key %s handled a message twice: %v", k, vs)
		}
	}
	if got := sortedInts(all); len(got) != n || got[0] != 0 || got[n-1] != n-1 {
		t.Fatalf("handled %d stream messages, want 0..%d once each", len(got), n-1)
	}
	for _, sz := range sizes {
		if sz > 10 || sz < 1 {
			t.Fatalf("batch sizes %v, want 1..10", sizes)
		}
	}
}

func sortedInts(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func (s *suite) testBusBroadcast(t *testing.T) {
	s.requirePattern(t, driver.Broadcast)
	typ := "dt.cache.flush." + unique()
	c := newTally()
	for i := range 3 {
		name := "cache-" + strconv.Itoa(i)
		s.bus(t, name, func(b *eventbus.Bus) error {
			return errOnly(b.SubscribeBroadcast(context.Background(), []string{typ}, c.handler(name)))
		})
	}
	pub := s.bus(t, "admin", nil)
	m := jsonMessage(t, typ, "all")
	if err := pub.Broadcast(timeout(t, opTimeout), m); err != nil {
		t.Fatal(err)
	}
	await(t, "the broadcast on every instance", func() bool { return c.total() >= 3 })
	time.Sleep(quietWindow)
	for i := range 3 {
		if got := c.of("cache-" + strconv.Itoa(i)); !slices.Equal(got, []string{m.ID}) {
			t.Fatalf("instance %d got %v, want the broadcast once", i, got)
		}
	}
}

func (s *suite) testBusDeadLetter(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requirePattern(t, driver.DeadLetter)
	typ := "dt.payment.failed." + unique()
	origin := driver.NewDestination(driver.Event, typ)
	raw := s.open(t)
	dlq := subscribe(t, raw, driver.DeadLetterOf(origin), driver.SubscribeOptions{Group: s.group(), Durable: s.caps.Durable})

	var mu sync.Mutex
	attempts := map[string]int{}
	s.bus(t, "payments", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, "payments", eventbus.Typed(func(_ context.Context, m *eventbus.Message, amount int) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[m.ID]++
			if amount < 0 {
				return eventbus.Permanent(errors.New("negative amount"))
			}
			return errors.New("gateway down")
		})))
	})
	pub := s.bus(t, "orders", nil)
	retried := jsonMessage(t, typ, 10)
	retried.Subject = "order-1"
	permanent := jsonMessage(t, typ, -5)
	undecodable := &eventbus.Message{Type: typ, Data: []byte("{not json"), DataContentType: "application/json"}
	for _, m := range []*eventbus.Message{retried, permanent, undecodable} {
		if err := pub.PublishEvent(timeout(t, opTimeout), m); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]*driver.Delivery{}
	ctx := timeout(t, deliveryTimeout)
	for len(got) < 3 {
		ds, err := dlq.Receive(ctx, 3)
		if err != nil {
			t.Fatalf("dead letters: got %d of 3: %v", len(got), err)
		}
		for _, d := range ds {
			got[d.Message.ID] = d
		}
		if err := dlq.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	check := func(m *eventbus.Message, wantAttempts int, wantReason string) {
		t.Helper()
		d := got[m.ID]
		if d == nil {
			t.Fatalf("message %s not dead-lettered", m.ID)
		}
		dm := d.Message
		if dm.Type != m.Type || dm.Subject != m.Subject || string(dm.Data) != string(m.Data) || dm.Source != m.Source {
			t.Fatalf("dead letter lost original attributes: %+v", dm)
		}
		ext := dm.Extensions
		if ext[driver.ExtDeadLetterOrigin] != origin.Name || ext[driver.ExtDeadLetterAttempts] != strconv.Itoa(wantAttempts) ||
			!strings.Contains(ext[driver.ExtDeadLetterReason], wantReason) {
			t.Fatalf("dead-letter attributes %v, want origin %s, %d attempts, reason with %q", ext, origin.Name, wantAttempts, wantReason)
		}
	}
	check(retried, busRetry.MaxAttempts, "gateway down")
	check(permanent, 1, "negative amount")
	check(undecodable, 1, "decode")
	mu.Lock()
	defer mu.Unlock()
	if attempts[retried.ID] != busRetry.MaxAttempts || attempts[permanent.ID] != 1 || attempts[undecodable.ID] != 0 {
		t.Fatalf("handler calls %v: want %d, 1 and 0 (decoding fails before the handler)", attempts, busRetry.MaxAttempts)
	}
}

func (s *suite) testBusDurable(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "Durable", "ConsumerGroups")
	typ := "dt.ledger.entry." + unique()
	group := "ledger" + unique()
	c := newTally()
	first := s.bus(t, "ledger-1", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, c.handler("ledger")))
	})
	pub := s.bus(t, "accounts", nil)
	var sent []string
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			m := jsonMessage(t, typ, i)
			if err := pub.PublishEvent(timeout(t, opTimeout), m); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, m.ID)
		}
	}
	publish(0, 20)
	await(t, "the first 20", func() bool { return c.total() >= 20 })
	closeBus(t, first)
	publish(20, 50) // nobody of the group runs now
	s.bus(t, "ledger-2", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, c.handler("ledger")))
	})
	await(t, "the 30 published while the group was down", func() bool { return c.total() >= 50 })
	time.Sleep(quietWindow)
	got := c.of("ledger")
	if !slices.Equal(sorted(slices.Compact(sorted(got))), sorted(sent)) {
		t.Fatalf("the group handled %d distinct of %d events", len(slices.Compact(sorted(got))), len(sent))
	}
	if len(got) != len(sent) {
		t.Logf("%d duplicates after the restart (at-least-once)", len(got)-len(sent))
	}
}

// errOnly drops the subscription of a subscribe call, for set-up functions
// whose subscriptions live as long as their bus.
func errOnly(_ *eventbus.Subscription, err error) error { return err }
