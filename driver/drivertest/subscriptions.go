package drivertest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
)

// runSubscriptionTests checks, through the Bus, what subscriptions promise on
// every driver: they open and close while the bus runs, settle each message
// as soon as its handler returned, keep ack deadlines while handlers run,
// give back at close what they did not start, and never loop on a message
// that can be neither handled nor dead-lettered.
func (s *suite) runSubscriptionTests(t *testing.T) {
	t.Run("SubscribeAfterStart", s.testSubscribeAfterStart)
	t.Run("UnsubscribeUnderLoad", s.testUnsubscribeUnderLoad)
	t.Run("SlowHandlersNoDuplicates", s.testSlowHandlersNoDuplicates)
	t.Run("LongHandlerKeepsItsMessage", s.testLongHandler)
	t.Run("CloseGivesBackAndKeepsDeadline", s.testBusCloseGivesBack)
	t.Run("UndeliverableDeadLetter", s.testUndeliverableDeadLetter)
	t.Run("DeclaredGroupKeepsMessages", s.testDeclaredGroup)
}

// A group declared before any member subscribes keeps what is published
// meanwhile.
func (s *suite) testDeclaredGroup(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "Durable", "ConsumerGroups")
	typ := "dt.declared." + unique()
	group := "declared" + unique()
	b := s.bus(t, "declarer", nil)
	if err := b.DeclareEventGroup(timeout(t, opTimeout), []string{typ}, group); err != nil {
		t.Fatalf("declare: %v", err)
	}
	if err := b.DeclareEventGroup(timeout(t, opTimeout), []string{typ}, group); err != nil {
		t.Fatalf("declare again: %v", err)
	}
	var sent []string
	for i := range 5 {
		m := jsonMessage(t, typ, i)
		if err := b.PublishEvent(timeout(t, opTimeout), m); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m.ID)
	}
	c := newTally()
	s.bus(t, "member", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, c.handler("member")))
	})
	await(t, "the 5 events published before the first member", func() bool { return c.total() >= 5 })
	if got := c.of("member"); !slices.Equal(got, sent) {
		t.Fatalf("got %v, want %v in order", got, sent)
	}
}

// counter counts handlings per message id.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
	n    atomic.Int64
}

func newCounter() *counter { return &counter{seen: map[string]int{}} }

func (c *counter) add(id string) {
	c.mu.Lock()
	c.seen[id]++
	c.mu.Unlock()
	c.n.Add(1)
}

func (c *counter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *counter) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := 0
	for _, n := range c.seen {
		d += n - 1
	}
	return d
}

func (s *suite) testSubscribeAfterStart(t *testing.T) {
	s.requirePattern(t, driver.Event)
	typ := "dt.late." + unique()
	b := s.bus(t, "late", nil)
	got := make(chan string, 10)
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got <- string(m.Data)
		return nil
	})
	group := ""
	if s.caps.ConsumerGroups {
		group = "late" + unique()
	}
	sub, err := b.SubscribeEvents(timeout(t, opTimeout), []string{typ}, group, h)
	if err != nil {
		t.Fatalf("subscribe after start: %v", err)
	}
	// Established when it returns: a message published now is delivered.
	if err := b.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != "1" {
			t.Fatalf("got %s", v)
		}
	case <-timeout(t, deliveryTimeout).Done():
		t.Fatal("a message published after the subscribe call returned was not delivered")
	}
	if err := sub.Close(timeout(t, opTimeout)); err != nil {
		t.Fatalf("close subscription: %v", err)
	}
	if err := b.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, 2)); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		t.Fatalf("a closed subscription received %s", v)
	case <-time.After(quietWindow):
	}
}

func (s *suite) testUnsubscribeUnderLoad(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "ConsumerGroups", "Redelivery")
	typ := "dt.load." + unique()
	group := "load" + unique()
	c := newCounter()
	var byA atomic.Int64
	handler := func(mine *atomic.Int64) eventbus.Handler {
		return eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			mine.Add(1)
			c.add(m.ID)
			return nil
		})
	}
	a := s.bus(t, "member-a", nil)
	var byB atomic.Int64
	s.bus(t, "member-b", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, handler(&byB)))
	})
	subA, err := a.SubscribeEvents(timeout(t, opTimeout), []string{typ}, group, handler(&byA), eventbus.WithConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	const total = 400
	closed := make(chan error, 1)
	go func() {
		for byA.Load() < total/10 && byA.Load()+byB.Load() < total {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		closed <- subA.Close(ctx)
	}()
	pub := s.bus(t, "publisher", nil)
	for i := range total {
		if err := pub.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	await(t, "every message handled by one member or the other", func() bool { return c.distinct() == total })
	t.Logf("member A handled %d before it unsubscribed, B %d; %d duplicates", byA.Load(), byB.Load(), c.duplicates())
}

// A handler slower than the ack wait allows for the whole batch it came in:
// each message is settled when its handler returns and the others' deadlines
// are kept, so nothing is handled twice.
func (s *suite) testSlowHandlersNoDuplicates(t *testing.T) {
	t.Parallel() // mostly waiting
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "ConsumerGroups", "Redelivery")
	typ := "dt.slow." + unique()
	const n, each, ackWait = 15, 200 * time.Millisecond, time.Second
	c := newCounter()
	s.bus(t, "slow", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, "slow"+unique(), eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			time.Sleep(each)
			c.add(m.ID)
			return nil
		}), eventbus.WithAckWait(ackWait)))
	})
	pub := s.bus(t, "publisher", nil)
	for i := range n {
		if err := pub.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, i)); err != nil {
			t.Fatal(err)
		}
	}
	await(t, "every message handled", func() bool { return c.distinct() == n })
	time.Sleep(ackWait + quietWindow) // a late settlement would show as a redelivery by now
	if d := c.duplicates(); d > 0 {
		t.Fatalf("%d of %d messages handled twice: settlements or deadlines came late", d, n)
	}
}

// A handler that runs three times the ack wait keeps its message: the other
// member of the group does not receive it meanwhile.
func (s *suite) testLongHandler(t *testing.T) {
	t.Parallel() // mostly waiting
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "ConsumerGroups", "Redelivery")
	typ := "dt.long." + unique()
	group := "long" + unique()
	const ackWait = time.Second
	c := newCounter()
	h := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		c.add(m.ID)
		select {
		case <-time.After(3 * ackWait):
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	for _, name := range []string{"member-a", "member-b"} {
		s.bus(t, name, func(b *eventbus.Bus) error {
			return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, h, eventbus.WithAckWait(ackWait)))
		})
	}
	pub := s.bus(t, "publisher", nil)
	if err := pub.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, 1)); err != nil {
		t.Fatal(err)
	}
	await(t, "the message handled", func() bool { return c.distinct() == 1 })
	time.Sleep(3*ackWait + quietWindow)
	if n := c.n.Load(); n != 1 {
		t.Fatalf("handled %d times: redelivered while its handler ran", n)
	}
}

// Close starts no handler after it began, returns by its deadline, and gives
// back what it did not start, so that another member has it at once.
func (s *suite) testBusCloseGivesBack(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "ConsumerGroups", "Redelivery")
	typ := "dt.drain." + unique()
	group := "drain" + unique()
	c := newCounter()
	var closing atomic.Int64
	var late atomic.Int64
	a := s.bus(t, "member-a", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			if at := closing.Load(); at != 0 && time.Now().UnixNano() > at {
				late.Add(1)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			c.add(m.ID)
			return nil
		}), eventbus.WithConcurrency(2)))
	})
	pub := s.bus(t, "publisher", nil)
	const total = 300
	for i := range total {
		if err := pub.PublishEvent(timeout(t, opTimeout), jsonMessage(t, typ, i)); err != nil {
			t.Fatal(err)
		}
	}
	await(t, "member A at work", func() bool { return c.n.Load() >= 4 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	closing.Store(time.Now().UnixNano())
	began := time.Now()
	err := a.Close(ctx)
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Close with a 1s deadline took %v", took)
	}
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := late.Load(); n > 0 {
		t.Fatalf("%d handlers started after Close began", n)
	}
	// The rest arrives at member B well before any ack wait expires.
	s.bus(t, "member-b", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			c.add(m.ID)
			return nil
		}), eventbus.WithConcurrency(8)))
	})
	await(t, "every message handled by A or B", func() bool { return c.distinct() == total })
}

// A message just under the size limit cannot be dead-lettered whole (the
// dead-letter attributes take it over): the dead letter is cut to fit and
// says so, and the handler ran once.
func (s *suite) testUndeliverableDeadLetter(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requirePattern(t, driver.DeadLetter)
	limit := s.caps.MaxMessageSize
	if limit <= 0 {
		t.Skip("driver declares no MaxMessageSize")
	}
	typ := "dt.oversize." + unique()
	origin := driver.NewDestination(driver.Event, typ)
	dlq := subscribe(t, s.open(t), driver.DeadLetterOf(origin), driver.SubscribeOptions{Group: s.group(), Durable: s.caps.Durable})
	var calls atomic.Int64
	s.bus(t, "consumer", func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, "oversize"+unique(), eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
			calls.Add(1)
			return eventbus.Permanent(errors.New("refused by the handler"))
		})))
	})
	pub := s.bus(t, "publisher", nil)
	m := &eventbus.Message{ID: "big-" + unique(), Source: "publisher", Type: typ, Time: time.Now()}
	m.Data = []byte(strings.Repeat("x", limit-m.Size()-8))
	if err := pub.PublishEvent(timeout(t, opTimeout), m); err != nil {
		t.Fatalf("publish a message just under the limit: %v", err)
	}
	ctx := timeout(t, deliveryTimeout)
	ds, err := dlq.Receive(ctx, 1)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	dm := ds[0].Message
	reason := dm.Extensions[driver.ExtDeadLetterReason]
	if dm.ID != m.ID || !strings.Contains(reason, "refused by the handler") || !strings.Contains(reason, "data cut") {
		t.Fatalf("dead letter id %s, reason %q", dm.ID, reason)
	}
	if dm.Extensions[driver.ExtDeadLetterAttempts] != strconv.Itoa(1) || len(dm.Data) >= len(m.Data) {
		t.Fatalf("dead letter attempts %s, %d bytes of data", dm.Extensions[driver.ExtDeadLetterAttempts], len(dm.Data))
	}
	if err := dlq.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
	time.Sleep(quietWindow)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
}
