package membus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	base := membus.New(nil)
	t.Cleanup(func() { _ = base.Close(context.Background()) })
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open:  func(ctx context.Context) (driver.Driver, error) { return base.Connect(), nil },
		Crash: func(d driver.Driver) error { d.(*membus.Driver).Crash(); return nil },
	})
}

var events = driver.NewDestination(driver.Event, "order.created")

func msg(i int) *driver.Message {
	return &driver.Message{
		ID:     strconv.Itoa(i),
		Source: "test",
		Type:   "order.created",
		Key:    "k" + strconv.Itoa(i%3),
		Header: map[string][]string{"n": {strconv.Itoa(i)}},
		Data:   []byte("payload " + strconv.Itoa(i)),
	}
}

func msgs(from, to int) []*driver.Message {
	var ms []*driver.Message
	for i := from; i < to; i++ {
		ms = append(ms, msg(i))
	}
	return ms
}

// open returns a fresh broker connection closed at the end of the test.
func open(t *testing.T, opts *membus.Options) *membus.Driver {
	t.Helper()
	d := membus.New(opts)
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func subscribe(t *testing.T, d driver.Driver, dest driver.Destination, opts driver.SubscribeOptions) driver.Subscription {
	t.Helper()
	s, err := d.Subscribe(context.Background(), dest, opts)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func publish(t *testing.T, d driver.Driver, dest driver.Destination, ms []*driver.Message) {
	t.Helper()
	if err := d.Publish(context.Background(), dest, ms); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// receiveN receives exactly n deliveries (failing after 5s) and acks them
// when ack is set.
func receiveN(t *testing.T, s driver.Subscription, n int, ack bool) []*driver.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []*driver.Delivery
	for len(out) < n {
		ds, err := s.Receive(ctx, n-len(out))
		if err != nil {
			t.Fatalf("receive after %d of %d: %v", len(out), n, err)
		}
		if len(ds) == 0 || len(ds) > n-len(out) {
			t.Fatalf("receive returned %d deliveries, asked at most %d", len(ds), n-len(out))
		}
		if ack {
			if err := s.Ack(ctx, ds); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		out = append(out, ds...)
	}
	return out
}

// expectNothing asserts that nothing arrives within wait.
func expectNothing(t *testing.T, s driver.Subscription, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ds, err := s.Receive(ctx, 10)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("receive: got %d deliveries, err %v; want nothing and DeadlineExceeded", len(ds), err)
	}
}

func ids(ds []*driver.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Message.ID)
	}
	return out
}

func wantIDs(t *testing.T, ds []*driver.Delivery, from, to int) {
	t.Helper()
	got := ids(ds)
	if len(got) != to-from {
		t.Fatalf("got %d deliveries %v, want ids %d..%d", len(got), got, from, to-1)
	}
	for i, id := range got {
		if id != strconv.Itoa(from+i) {
			t.Fatalf("delivery %d has id %s, want %d (all: %v)", i, id, from+i, got)
		}
	}
}

func TestCapabilities(t *testing.T) {
	d := open(t, &membus.Options{MaxMessageSize: 1000})
	c := d.Capabilities()
	if c.Name != "membus" || !c.Durable || !c.ConsumerGroups || !c.OrderingByKey || !c.Redelivery ||
		!c.NativeDelay || !c.NativeRequestReply || c.MaxMessageSize != 1000 {
		t.Fatalf("capabilities %+v", c)
	}
	for _, p := range []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Stream,
		driver.Broadcast, driver.Reply, driver.DeadLetter} {
		if !c.Serves(p) {
			t.Errorf("does not serve %v", p)
		}
	}
	if got := membus.New(nil).Capabilities().MaxMessageSize; got != membus.DefaultMaxMessageSize {
		t.Errorf("default MaxMessageSize %d", got)
	}
}

func TestPublishReceiveContentAndOrder(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	ms := msgs(0, 100)
	publish(t, d, events, ms[:40])
	publish(t, d, events, ms[40:])
	// The driver copied the messages: the caller may reuse them.
	for _, m := range ms {
		m.Data[0] = 'X'
		m.Header["n"][0] = "changed"
	}
	ds := receiveN(t, s, 100, true)
	wantIDs(t, ds, 0, 100)
	for i, dl := range ds {
		m := dl.Message
		if dl.Attempt != 1 || dl.Err != nil {
			t.Fatalf("delivery %d: attempt %d, err %v", i, dl.Attempt, dl.Err)
		}
		if string(m.Data) != "payload "+strconv.Itoa(i) || m.Header["n"][0] != strconv.Itoa(i) ||
			m.Source != "test" || m.Type != "order.created" || m.Key != "k"+strconv.Itoa(i%3) {
			t.Fatalf("delivery %d: %+v", i, m)
		}
	}
	expectNothing(t, s, 20*time.Millisecond)
}

func TestGroupsCompeteAndEveryGroupGetsAll(t *testing.T) {
	base := open(t, nil)
	const n = 300
	type member struct {
		group string
		sub   driver.Subscription
	}
	var members []member
	for _, g := range []string{"billing", "shipping"} {
		for range 3 {
			c := base.Connect()
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			members = append(members, member{g, subscribe(t, c, events, driver.SubscribeOptions{Group: g})})
		}
	}
	private := subscribe(t, base, events, driver.SubscribeOptions{})

	var mu sync.Mutex
	seen := map[string]map[string]int{"billing": {}, "shipping": {}}
	perMember := make([]int, len(members))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			for {
				ds, err := m.sub.Receive(ctx, 7)
				if err != nil {
					return
				}
				if err := m.sub.Ack(ctx, ds); err != nil {
					t.Errorf("ack: %v", err)
				}
				mu.Lock()
				for _, d := range ds {
					seen[m.group][d.Message.ID]++
				}
				perMember[i] += len(ds)
				mu.Unlock()
			}
		})
	}
	publish(t, base, events, msgs(0, n))
	wantIDs(t, receiveN(t, private, n, true), 0, n)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		done := len(seen["billing"]) == n && len(seen["shipping"]) == n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let any duplicate show up
	cancel()
	wg.Wait()
	for g, ids := range seen {
		if len(ids) != n {
			t.Errorf("group %s got %d distinct messages, want %d", g, len(ids), n)
		}
		for id, k := range ids {
			if k != 1 {
				t.Errorf("group %s got %s %d times", g, id, k)
			}
		}
	}
	total := 0
	for _, k := range perMember {
		total += k
	}
	if total != 2*n {
		t.Errorf("members received %d in all, want %d", total, 2*n)
	}
}

func TestPublishWithoutSubscriberIsDropped(t *testing.T) {
	d := open(t, nil)
	if err := d.Publish(context.Background(), events, msgs(0, 3)); err != nil {
		t.Fatalf("publish to nobody: %v", err)
	}
	s := subscribe(t, d, events, driver.SubscribeOptions{Group: "g", StartAt: driver.StartFirst})
	expectNothing(t, s, 20*time.Millisecond)
	publish(t, d, events, msgs(3, 4))
	wantIDs(t, receiveN(t, s, 1, true), 3, 4)
}

func TestDurableGroupOutlivesMembers(t *testing.T) {
	base := open(t, nil)
	opts := driver.SubscribeOptions{Group: "audit", Durable: true}
	c1 := base.Connect()
	s1 := subscribe(t, c1, events, opts)
	publish(t, base, events, msgs(0, 4))
	// Two acked, two in flight when the member's connection closes.
	first := receiveN(t, s1, 4, false)
	wantIDs(t, first, 0, 4)
	if err := s1.Ack(context.Background(), first[:2]); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(t, base, events, msgs(4, 7)) // queued with no member connected
	c2 := base.Connect()
	t.Cleanup(func() { _ = c2.Close(context.Background()) })
	s2 := subscribe(t, c2, events, opts)
	ds := receiveN(t, s2, 5, true)
	wantIDs(t, ds, 2, 7)
	for _, d := range ds {
		want := 1
		if d.Message.ID == "2" || d.Message.ID == "3" {
			want = 2
		}
		if d.Attempt != want {
			t.Errorf("message %s attempt %d, want %d", d.Message.ID, d.Attempt, want)
		}
	}
	expectNothing(t, s2, 20*time.Millisecond)
}

func TestNonDurableGroupIsGoneWithLastMember(t *testing.T) {
	d := open(t, nil)
	s1 := subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	publish(t, d, events, msgs(0, 2))
	receiveN(t, s1, 1, false)
	if err := s1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(t, d, events, msgs(2, 3))
	s2 := subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	expectNothing(t, s2, 20*time.Millisecond)
}

func TestBackpressure(t *testing.T) {
	d := open(t, &membus.Options{BufferSize: 4})
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	publish(t, d, events, msgs(0, 4))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := d.Publish(ctx, events, msgs(4, 5))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a full queue: %v, want DeadlineExceeded", err)
	}

	// A blocked publisher resumes as the consumer drains.
	published := make(chan error, 1)
	go func() { published <- d.Publish(context.Background(), events, msgs(5, 15)) }()
	select {
	case err := <-published:
		t.Fatalf("publish returned %v while the queue was full", err)
	case <-time.After(20 * time.Millisecond):
	}
	ds := receiveN(t, s, 14, true)
	if err := <-published; err != nil {
		t.Fatalf("blocked publish: %v", err)
	}
	wantIDs(t, ds[:4], 0, 4)
	wantIDs(t, ds[4:], 5, 15)
}

func TestBlockedPublishEndsWithQueueOrConnection(t *testing.T) {
	base := open(t, &membus.Options{BufferSize: 1})
	s := subscribe(t, base, events, driver.SubscribeOptions{})
	publish(t, base, events, msgs(0, 1))

	// The only queue goes away: the rest is dropped, as with no subscriber.
	errc := make(chan error, 1)
	go func() { errc <- base.Publish(context.Background(), events, msgs(1, 3)) }()
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("publish after its queue closed: %v", err)
	}

	// The publishing connection closes: ErrClosed.
	subscribe(t, base, events, driver.SubscribeOptions{})
	publish(t, base, events, msgs(0, 1))
	c := base.Connect()
	go func() { errc <- c.Publish(context.Background(), events, msgs(1, 2)) }()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("publish on a closed connection: %v, want ErrClosed", err)
	}
}

// TestLiveSubscriptionKeepsDeliveries checks that AckWait never takes a
// delivery away from a live subscription, nor gives it to another member.
func TestLiveSubscriptionKeepsDeliveries(t *testing.T) {
	d := open(t, &membus.Options{AckWait: 20 * time.Millisecond})
	opts := driver.SubscribeOptions{Group: "g", AckWait: 20 * time.Millisecond}
	holder := subscribe(t, d, events, opts)
	publish(t, d, events, msgs(0, 2))
	held := receiveN(t, holder, 2, false)
	other := subscribe(t, d, events, opts)
	// Ten ack waits pass; nobody receives the held messages again.
	expectNothing(t, other, 200*time.Millisecond)
	expectNothing(t, holder, 10*time.Millisecond)
	if err := holder.Ack(context.Background(), held); err != nil {
		t.Fatalf("ack long after AckWait: %v", err)
	}
	publish(t, d, events, msgs(2, 3))
	if ds := receiveN(t, other, 1, true); ds[0].Message.ID != "2" {
		t.Fatalf("other member received %s, want 2", ds[0].Message.ID)
	}
}

// TestCrashRedeliversAfterAckWait checks that the unsettled deliveries of a
// crashed connection go to another member once their AckWait has passed, in
// their order, with the next Attempt, and not before.
func TestCrashRedeliversAfterAckWait(t *testing.T) {
	base := open(t, &membus.Options{AckWait: time.Hour})
	const wait = 100 * time.Millisecond
	opts := driver.SubscribeOptions{Group: "g", Durable: true, AckWait: wait}
	c := base.Connect()
	crashing := subscribe(t, c, events, opts)
	publish(t, base, events, msgs(0, 3))
	held := receiveN(t, crashing, 3, false)
	start := time.Now()
	if err := crashing.Ack(context.Background(), held[1:2]); err != nil {
		t.Fatal(err)
	}
	c.Crash()
	if err := crashing.Ack(context.Background(), held); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("ack after crash: %v, want ErrClosed", err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("close after crash: %v", err)
	}
	// The durable group outlives its only member; the next one receives the
	// crashed member's messages when their ack wait is over.
	next := subscribe(t, base, events, opts)
	ds := receiveN(t, next, 2, true)
	if el := time.Since(start); el < wait {
		t.Fatalf("redelivered %v after the crash, before AckWait %v", el, wait)
	}
	if got := ids(ds); got[0] != "0" || got[1] != "2" {
		t.Fatalf("redelivered %v, want [0 2]", got)
	}
	for _, dl := range ds {
		if dl.Attempt != 2 {
			t.Errorf("message %s attempt %d, want 2", dl.Message.ID, dl.Attempt)
		}
	}
	expectNothing(t, next, 2*wait)
}

// TestCrashLastMemberOfNonDurableGroup checks that a crash ends a
// non-durable group with its last member, as Close does, and leaks nothing.
func TestCrashLastMemberOfNonDurableGroup(t *testing.T) {
	base := open(t, nil)
	c := base.Connect()
	s := subscribe(t, c, events, driver.SubscribeOptions{Group: "g", AckWait: 10 * time.Millisecond})
	publish(t, base, events, msgs(0, 1))
	receiveN(t, s, 1, false)
	c.Crash()
	next := subscribe(t, base, events, driver.SubscribeOptions{Group: "g"})
	expectNothing(t, next, 50*time.Millisecond)
}

func TestNack(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	publish(t, d, events, msgs(0, 5))
	ctx := context.Background()

	// Nack(0) puts the batch back at the front, in order.
	first := receiveN(t, s, 3, false)
	if err := s.Nack(ctx, first, 0); err != nil {
		t.Fatal(err)
	}
	ds := receiveN(t, s, 5, false)
	wantIDs(t, ds, 0, 5)
	for i, dl := range ds {
		want := 1
		if i < 3 {
			want = 2
		}
		if dl.Attempt != want {
			t.Fatalf("message %s attempt %d, want %d", dl.Message.ID, dl.Attempt, want)
		}
	}

	// Nack with a delay holds the messages back that long.
	if err := s.Ack(ctx, ds[2:]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Nack(ctx, ds[:2], 60*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, s, 30*time.Millisecond)
	again := receiveN(t, s, 2, true)
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("delayed nack redelivered after %v", el)
	}
	wantIDs(t, again, 0, 2)
	if again[0].Attempt != 3 {
		t.Fatalf("attempt %d, want 3", again[0].Attempt)
	}
}

func TestTerm(t *testing.T) {
	d := open(t, &membus.Options{AckWait: 20 * time.Millisecond})
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	publish(t, d, events, msgs(0, 1))
	ds := receiveN(t, s, 1, false)
	if err := s.Term(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, s, 60*time.Millisecond)
}

func TestUnsettledReturnToGroupOnClose(t *testing.T) {
	d := open(t, nil)
	a := subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	publish(t, d, events, msgs(0, 3))
	receiveN(t, a, 3, false)
	b := subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	publish(t, d, events, msgs(3, 4))
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ds := receiveN(t, b, 4, true)
	if ds[0].Message.ID == "3" {
		// b may have taken message 3 before a closed.
		wantIDs(t, ds[1:], 0, 3)
	} else {
		wantIDs(t, ds, 0, 4)
	}
}

func TestSettleErrors(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	other := subscribe(t, d, events, driver.SubscribeOptions{})
	publish(t, d, events, msgs(0, 2))
	ctx := context.Background()
	ds := receiveN(t, s, 2, false)
	otherDs := receiveN(t, other, 2, false)

	if err := s.Ack(ctx, ds[:1]); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"ack twice":         s.Ack(ctx, ds[:1]),
		"nack after ack":    s.Nack(ctx, ds[:1], 0),
		"term after ack":    s.Term(ctx, ds[:1]),
		"ack mixed batch":   s.Ack(ctx, ds),
		"ack after partial": s.Ack(ctx, ds[1:]),
	} {
		if !errors.Is(err, membus.ErrNotInFlight) {
			t.Errorf("%s: %v, want ErrNotInFlight", name, err)
		}
	}
	for name, err := range map[string]error{
		"other subscription": s.Ack(ctx, otherDs),
		"nil delivery":       s.Ack(ctx, []*driver.Delivery{nil}),
		"foreign handle":     s.Nack(ctx, []*driver.Delivery{{Message: msg(0), Handle: "x"}}, 0),
	} {
		if !errors.Is(err, membus.ErrForeignDelivery) {
			t.Errorf("%s: %v, want ErrForeignDelivery", name, err)
		}
	}
	// The mixed batch above still acked the valid delivery.
	expectNothing(t, s, 20*time.Millisecond)
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Ack(ctx, otherDs); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("ack after close: %v, want ErrClosed", err)
	}
}

func TestMaxInFlight(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{MaxInFlight: 2})
	publish(t, d, events, msgs(0, 5))
	ds := receiveN(t, s, 2, false)
	expectNothing(t, s, 20*time.Millisecond)
	go func() {
		time.Sleep(10 * time.Millisecond)
		_ = s.Ack(context.Background(), ds[:1])
	}()
	more := receiveN(t, s, 1, false)
	wantIDs(t, append(ds, more...), 0, 3)
}

func TestPublishRefusesBadMessagesBeforeQueuing(t *testing.T) {
	d := open(t, &membus.Options{MaxMessageSize: 100})
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	big := msg(1)
	big.Data = make([]byte, 200)
	err := d.Publish(context.Background(), events, []*driver.Message{msg(0), big})
	var tl *driver.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, driver.ErrTooLarge) || tl.Limit != 100 || tl.Size <= 200 {
		t.Fatalf("publish too large: %v", err)
	}
	if err := d.Publish(context.Background(), events, []*driver.Message{msg(0), nil}); !errors.Is(err, driver.ErrMalformed) {
		t.Fatalf("publish nil: %v, want ErrMalformed", err)
	}
	expectNothing(t, s, 20*time.Millisecond)
}

func TestCloseWakesAndRefuses(t *testing.T) {
	base := open(t, nil)
	c := base.Connect()
	s, err := c.Subscribe(context.Background(), events, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	survivor := subscribe(t, base, events, driver.SubscribeOptions{Group: "g"})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Receive(context.Background(), 1)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, driver.ErrClosed) {
			t.Fatalf("receive on close: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Receive still blocked after Close")
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("subscription close after connection close: %v", err)
	}
	ctx := context.Background()
	q := driver.NewDestination(driver.Query, "svc", "get")
	checks := map[string]error{
		"publish":   c.Publish(ctx, events, msgs(0, 1)),
		"receive":   func() error { _, err := s.Receive(ctx, 1); return err }(),
		"subscribe": func() error { _, err := c.Subscribe(ctx, events, driver.SubscribeOptions{}); return err }(),
		"request":   func() error { _, err := c.Request(ctx, q, msg(0)); return err }(),
		"reply":     c.Reply(ctx, &driver.Delivery{}, msg(0)),
	}
	for name, err := range checks {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
	// The other connection keeps working, in the same group.
	publish(t, base, events, msgs(0, 2))
	wantIDs(t, receiveN(t, survivor, 2, true), 0, 2)
}

func TestRequestReply(t *testing.T) {
	base := open(t, nil)
	q := driver.NewDestination(driver.Query, "pricing", "quote")
	ctx := context.Background()

	if _, err := base.Request(ctx, q, msg(0)); !errors.Is(err, driver.ErrNoResponders) {
		t.Fatalf("request without responders: %v, want ErrNoResponders", err)
	}

	responder := base.Connect()
	t.Cleanup(func() { _ = responder.Close(context.Background()) })
	s := subscribe(t, responder, q, driver.SubscribeOptions{Group: "pricing"})
	srvCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			ds, err := s.Receive(srvCtx, 10)
			if err != nil {
				return
			}
			for _, d := range ds {
				if d.Message.ID == "slow" {
					continue // never answered
				}
				r := &driver.Message{ID: "r-" + d.Message.ID, Source: "pricing", Type: "quote.result",
					CorrelationID: d.Message.ID, Data: append([]byte("price of "), d.Message.Data...)}
				if err := responder.Reply(srvCtx, d, r); err != nil {
					t.Errorf("reply: %v", err)
				}
				// A second reply is discarded without error.
				if err := responder.Reply(srvCtx, d, r); err != nil {
					t.Errorf("second reply: %v", err)
				}
			}
			_ = s.Ack(srvCtx, ds)
		}
	})
	defer func() { stop(); wg.Wait() }()

	for i := range 20 {
		reply, err := base.Request(ctx, q, msg(i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if reply.ID != "r-"+strconv.Itoa(i) || reply.CorrelationID != strconv.Itoa(i) ||
			string(reply.Data) != "price of payload "+strconv.Itoa(i) {
			t.Fatalf("reply %d: %+v", i, reply)
		}
	}

	slow := msg(0)
	slow.ID = "slow"
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := base.Request(tctx, q, slow); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered request: %v, want DeadlineExceeded", err)
	}
}

func TestReplyEdgeCases(t *testing.T) {
	d := open(t, nil)
	q := driver.NewDestination(driver.Query, "svc", "get")
	s := subscribe(t, d, q, driver.SubscribeOptions{})
	ctx := context.Background()

	publish(t, d, q, msgs(0, 1))
	plain := receiveN(t, s, 1, true)
	if err := d.Reply(ctx, plain[0], msg(1)); !errors.Is(err, membus.ErrNotRequest) {
		t.Fatalf("reply to a plain message: %v, want ErrNotRequest", err)
	}
	if err := d.Reply(ctx, &driver.Delivery{Handle: 3}, msg(1)); !errors.Is(err, membus.ErrForeignDelivery) {
		t.Fatalf("reply to a foreign delivery: %v, want ErrForeignDelivery", err)
	}
	if err := d.Reply(ctx, nil, msg(1)); !errors.Is(err, membus.ErrForeignDelivery) {
		t.Fatalf("reply to nil: %v, want ErrForeignDelivery", err)
	}

	// The requester gives up; the late reply is discarded and is no error.
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := d.Request(rctx, q, msg(2)); errc <- err }()
	req := receiveN(t, s, 1, true)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	if err := d.Reply(ctx, req[0], msg(3)); err != nil {
		t.Fatalf("late reply: %v", err)
	}
	big := msg(4)
	big.Data = make([]byte, membus.DefaultMaxMessageSize)
	if err := d.Reply(ctx, req[0], big); !errors.Is(err, driver.ErrTooLarge) {
		t.Fatalf("too large reply: %v", err)
	}

	// A requester whose connection closes stops waiting.
	c := d.Connect()
	go func() { _, err := c.Request(ctx, q, msg(5)); errc <- err }()
	receiveN(t, s, 1, true)
	_ = c.Close(ctx)
	if err := <-errc; !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("request on a closing connection: %v, want ErrClosed", err)
	}
}

func TestPublishRefusesInvalidEnvelopes(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	q := driver.NewDestination(driver.Query, "svc", "get")
	ctx := context.Background()
	spaced := msg(1)
	spaced.ID = "1 "
	badExt := msg(2)
	badExt.Extensions = map[string]string{"Tenant": "acme"}
	badHeader := msg(3)
	badHeader.Header = map[string][]string{"X Bad": {"v"}}
	for name, bad := range map[string]*driver.Message{"id": spaced, "extension": badExt, "header": badHeader} {
		err := d.Publish(ctx, events, []*driver.Message{msg(0), bad})
		var inv *driver.InvalidError
		if !errors.As(err, &inv) || !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("publish with an invalid %s: %v, want a *driver.InvalidError", name, err)
		}
		if err != nil && strings.Count(err.Error(), "membus:") != 1 {
			t.Errorf("error %q is not wrapped exactly once", err)
		}
		if _, err := d.Request(ctx, q, bad); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("request with an invalid %s: %v, want ErrInvalid", name, err)
		}
	}
	expectNothing(t, s, 20*time.Millisecond)

	// A reply is checked the same way.
	rs := subscribe(t, d, q, driver.SubscribeOptions{})
	errc := make(chan error, 1)
	go func() { _, err := d.Request(ctx, q, msg(4)); errc <- err }()
	req := receiveN(t, rs, 1, true)
	if err := d.Reply(ctx, req[0], badExt); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("reply with an invalid extension: %v, want ErrInvalid", err)
	}
	if err := d.Reply(ctx, req[0], msg(5)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("request: %v", err)
	}
}

func TestNoDeduplication(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	publish(t, d, events, msgs(0, 1))
	publish(t, d, events, msgs(0, 1))
	wantIDs(t, receiveN(t, s, 1, true), 0, 1)
	wantIDs(t, receiveN(t, s, 1, true), 0, 1)
}

func TestDeclareGroup(t *testing.T) {
	base := open(t, nil)
	ctx := context.Background()
	opts := driver.SubscribeOptions{Group: "audit", Durable: true}
	for _, bad := range []driver.SubscribeOptions{{Group: "audit"}, {Durable: true}} {
		if err := base.DeclareGroup(ctx, events, bad); !errors.Is(err, driver.ErrUnsupported) {
			t.Errorf("declare %+v: %v, want ErrUnsupported", bad, err)
		}
	}
	if err := base.DeclareGroup(ctx, events, opts); err != nil {
		t.Fatal(err)
	}
	publish(t, base, events, msgs(0, 2))
	// Declaring again changes nothing: what the group holds stays.
	if err := base.DeclareGroup(ctx, events, opts); err != nil {
		t.Fatal(err)
	}
	publish(t, base, events, msgs(2, 3))
	s := subscribe(t, base.Connect(), events, opts)
	wantIDs(t, receiveN(t, s, 3, true), 0, 3)

	// A non-durable group that exists becomes durable when declared.
	tmp := driver.SubscribeOptions{Group: "tmp"}
	member := subscribe(t, base, events, tmp)
	if err := base.DeclareGroup(ctx, events, driver.SubscribeOptions{Group: "tmp", Durable: true}); err != nil {
		t.Fatal(err)
	}
	if err := member.Close(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, base, events, msgs(3, 4))
	wantIDs(t, receiveN(t, subscribe(t, base, events, tmp), 1, true), 3, 4)

	c := base.Connect()
	_ = c.Close(ctx)
	if err := c.DeclareGroup(ctx, events, opts); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("declare after close: %v, want ErrClosed", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := base.DeclareGroup(cctx, events, opts); !errors.Is(err, context.Canceled) {
		t.Errorf("declare with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestContentModePassesThrough(t *testing.T) {
	d := open(t, nil)
	s := subscribe(t, d, events, driver.SubscribeOptions{})
	structured, binary := msg(0), msg(1)
	structured.Mode = driver.Structured
	publish(t, d, events, []*driver.Message{structured, binary})
	ds := receiveN(t, s, 2, true)
	if ds[0].Message.Mode != driver.Structured || ds[1].Message.Mode != driver.Binary {
		t.Fatalf("received modes %v, %v; want Structured, Binary", ds[0].Message.Mode, ds[1].Message.Mode)
	}
}

// TestConcurrentStress runs publishers and competing consumers at once; under
// -race it checks the locking, and it checks that nothing is lost or
// duplicated.
func TestConcurrentStress(t *testing.T) {
	base := open(t, &membus.Options{BufferSize: 64})
	const publishers, perPublisher, consumers = 4, 500, 3
	var subs []driver.Subscription
	for range consumers {
		c := base.Connect()
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		subs = append(subs, subscribe(t, c, events, driver.SubscribeOptions{Group: "g"}))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	var cw sync.WaitGroup
	for i, s := range subs {
		cw.Go(func() {
			for {
				ds, err := s.Receive(ctx, 16)
				if err != nil {
					return
				}
				// Consumer 0 nacks its first attempts: they must come back.
				if i == 0 && ds[0].Attempt == 1 {
					_ = s.Nack(ctx, ds, 0)
					continue
				}
				if err := s.Ack(ctx, ds); err != nil {
					t.Errorf("ack: %v", err)
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Message.ID]++
				}
				mu.Unlock()
			}
		})
	}
	var pw sync.WaitGroup
	for p := range publishers {
		pw.Go(func() {
			for i := range perPublisher {
				m := msg(p*perPublisher + i)
				if err := base.Publish(ctx, events, []*driver.Message{m}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	pw.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == publishers*perPublisher || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	cw.Wait()
	if len(seen) != publishers*perPublisher {
		t.Fatalf("got %d distinct messages, want %d", len(seen), publishers*perPublisher)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("message %s acked %d times", id, k)
		}
	}
}

func Example() {
	ctx := context.Background()
	bus := membus.New(nil)
	defer bus.Close(ctx)

	dest := driver.NewDestination(driver.Event, "order", "created")
	sub, _ := bus.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "billing"})
	_ = bus.Publish(ctx, dest, []*driver.Message{{
		ID: "1", Source: "shop", Type: "order.created", Data: []byte(`{"order":42}`),
	}})

	ds, _ := sub.Receive(ctx, 10)
	for _, d := range ds {
		fmt.Println(dest.Name, d.Message.Type, string(d.Message.Data), "attempt", d.Attempt)
	}
	_ = sub.Ack(ctx, ds)
	// Output: events.order.created order.created {"order":42} attempt 1
}

func ExampleDriver_Request() {
	ctx := context.Background()
	client := membus.New(nil)
	defer client.Close(ctx)
	server := client.Connect() // another service instance on the same broker
	defer server.Close(ctx)

	dest := driver.NewDestination(driver.Query, "pricing", "quote")
	sub, _ := server.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "pricing"})
	go func() {
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			return
		}
		_ = server.Reply(ctx, ds[0], &driver.Message{ID: "r1", Source: "pricing", Type: "quote.result", Data: []byte("9.99")})
		_ = sub.Ack(ctx, ds)
	}()

	reply, err := client.Request(ctx, dest, &driver.Message{ID: "q1", Source: "shop", Type: "quote", Data: []byte("sku-1")})
	fmt.Println(string(reply.Data), err)
	// Output: 9.99 <nil>
}
