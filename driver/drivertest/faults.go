package drivertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/faults"
)

// CheckDecoded fails t unless m and err keep the promise every driver's
// envelope decoder makes for any input, however broken (see
// driver.Delivery.Err): a message is always returned, the error matches
// driver.ErrMalformed, and a message decoded without error is a valid
// envelope. Fuzz targets of the drivers call it on whatever they decoded.
func CheckDecoded(t testing.TB, m *driver.Message, err error) {
	t.Helper()
	switch {
	case m == nil:
		t.Fatalf("decoder returned a nil message (error %v)", err)
	case err != nil && !errors.Is(err, driver.ErrMalformed):
		t.Fatalf("decoder error %v (%T) does not match driver.ErrMalformed", err, err)
	case err == nil && m.Validate() != nil:
		t.Fatalf("decoder accepted an invalid envelope: %v", m.Validate())
	}
}

// Reencodable reports whether a message that a decoder accepted can be
// published as it is: only then must it survive encoding and decoding again.
func Reencodable(m *driver.Message) bool {
	return driver.CheckEnvelope([]*driver.Message{m}) == nil
}

// CheckRedecoded fails t unless again, the message first encoded and
// decoded once more (with error err), is the same envelope as first.
func CheckRedecoded(t testing.TB, first, again *driver.Message, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("a decoded envelope, encoded again, does not decode: %v\n\tfirst: %+v", err, first)
	}
	if diffs := diffMessage(first, again); len(diffs) > 0 {
		t.Fatalf("a decoded envelope changed when encoded and decoded again:\n\t%s", strings.Join(diffs, "\n\t"))
	}
}

// FuzzSeeds returns envelopes that exercise every part of a binding: all
// attributes, extensions, a key, multi-valued headers and binary data; JSON
// data in structured content mode; no data at all; non-ASCII text. Fuzz
// targets encode them with their driver's encoder as their first seeds, so
// that the seeds follow the encoder as it changes.
func FuzzSeeds() []*driver.Message {
	full := &driver.Message{
		ID: "id-1", Source: "/fuzz/seed", Type: "fuzz.full", Subject: "order-1",
		Time:            time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		DataContentType: "application/octet-stream", DataSchema: "https://example.com/s.json",
		CorrelationID: "corr-1", CausationID: "cause-1",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v",
		ReplyTo: "reply.instance-1", Key: "key-1",
		Extensions: map[string]string{"tenant": "acme", "priority": "7"},
		Header:     map[string][]string{"X-Trace": {"a", "b"}, "Retry-Count": {"2"}},
		Data:       []byte{0, 1, 2, 0xff, '\n', '"', '%'},
	}
	structured := &driver.Message{
		ID: "id-2", Source: "/fuzz/seed", Type: "fuzz.structured", DataContentType: "application/json",
		Mode: driver.Structured, Key: "k2", Header: map[string][]string{"X-Free": {"yes"}},
		Data: []byte(`{"amount":10,"items":["a","b"]}`),
	}
	empty := &driver.Message{ID: "id-3", Source: "s", Type: "fuzz.empty"}
	text := &driver.Message{
		ID: "идентификатор", Source: "urn:fuzz:源", Type: "fuzz.text", DataContentType: "text/plain; charset=utf-8",
		Extensions: map[string]string{"note": "50% \"quoted\" é"}, Data: []byte("héllo wörld"),
	}
	return []*driver.Message{full, structured, empty, text}
}

// FuzzHeaders reads a fuzzer's string as name/value pairs, one a line, the
// name before the first colon: how the fuzz targets of drivers with text
// headers turn one fuzzed string into a header map.
func FuzzHeaders(s string) [][2]string {
	var pairs [][2]string
	for line := range strings.SplitSeq(s, "\n") {
		name, value, _ := strings.Cut(line, ":")
		pairs = append(pairs, [2]string{name, value})
	}
	return pairs
}

// FuzzHeaderText is the inverse of FuzzHeaders, for seeds.
func FuzzHeaderText(h map[string][]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(name + ":" + v)
		}
	}
	return b.String()
}

// RunFaultTests runs the handler faults of the fault suite through the
// eventbus Bus over the driver that h opens, each printing its figures:
//
//   - Poison: a message whose handler fails every time is tried exactly
//     three times (the retry policy's MaxAttempts), then dead-lettered with
//     its attempt count, while the messages published behind it are all
//     handled.
//   - HandlerPanics: handlers that panic are retried like failing ones and
//     the process goes on; a message that panics every time is
//     dead-lettered with the panic as its reason.
//   - SlowConsumer: handlers slower than the ack wait are not redelivered
//     while they run (no redelivery storm), and the deliveries the process
//     holds never exceed the subscription's MaxInFlight.
//   - GracefulShutdown: closing a busy consumer while messages keep coming
//     lets every started handler finish, starts none after Close returned,
//     keeps Close's deadline, and loses nothing: a durable group's next
//     member handles what the closed one did not. A handler stuck past the
//     deadline does not hold Close beyond it.
func RunFaultTests(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("drivertest: Harness.Open is nil")
	}
	s := &suite{h: h}
	d := s.open(t)
	s.caps = d.Capabilities()
	closeDriver(t, d)
	t.Run("Poison", s.testPoison)
	t.Run("HandlerPanics", s.testHandlerPanics)
	t.Run("SlowConsumer", s.testSlowConsumer)
	t.Run("GracefulShutdown", s.testGracefulShutdown)
}

// faultBus starts a bus on d with the suite's retry policy and closes it
// when the test ends.
func faultBus(t *testing.T, name string, d driver.Driver, setup func(b *eventbus.Bus) error) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(&eventbus.Options{Source: name, Retry: busRetry})
	if err := b.Register("backend", d); err != nil {
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

// publishEvents publishes n events of type typ with ids prefix-0000...,
// recording each confirmed publish in tally.
func publishEvents(t *testing.T, b *eventbus.Bus, typ, prefix string, n int, tally *faults.Tally, mutate func(i int, m *eventbus.Message)) {
	t.Helper()
	for i := range n {
		m := &eventbus.Message{ID: fmt.Sprintf("%s-%04d", prefix, i), Type: typ, Data: []byte(strconv.Itoa(i))}
		if mutate != nil {
			mutate(i, m)
		}
		if err := b.PublishEvent(timeout(t, opTimeout), m); err != nil {
			t.Fatalf("publish %s: %v", m.ID, err)
		}
		tally.Confirmed(m.ID)
	}
}

// awaitDeadLetters receives n dead letters from sub and returns them by id.
func awaitDeadLetters(t *testing.T, sub driver.Subscription, n int) map[string]*driver.Message {
	t.Helper()
	got := map[string]*driver.Message{}
	ctx := timeout(t, deliveryTimeout)
	for len(got) < n {
		ds, err := sub.Receive(ctx, n)
		if err != nil {
			t.Fatalf("dead letters: got %d of %d: %v", len(got), n, err)
		}
		for _, d := range ds {
			got[d.Message.ID] = d.Message
		}
		ack(t, sub, ds...)
	}
	return got
}

func (s *suite) testPoison(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requirePattern(t, driver.DeadLetter)
	typ := "dt.fault.poison." + unique()
	origin := driver.NewDestination(driver.Event, typ)
	dlq := subscribe(t, s.open(t), driver.DeadLetterOf(origin), driver.SubscribeOptions{Group: s.group(), Durable: s.caps.Durable})
	tally := faults.NewTally()
	var mu sync.Mutex
	poisonAttempts := 0
	consumer := faultBus(t, "consumer", s.open(t), func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, s.group(), eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			if m.Subject == "poison" {
				mu.Lock()
				poisonAttempts++
				mu.Unlock()
				return errors.New("poison: fails every time")
			}
			tally.Delivered(m.ID)
			return nil
		})))
	})
	pub := faultBus(t, "publisher", s.open(t), nil)
	publishEvents(t, pub, typ, "before", 20, tally, nil)
	poison := &eventbus.Message{ID: "poison-" + unique(), Type: typ, Subject: "poison"}
	if err := pub.PublishEvent(timeout(t, opTimeout), poison); err != nil {
		t.Fatal(err)
	}
	tally.Fault()
	publishEvents(t, pub, typ, "after", 40, tally, nil)
	dl := awaitDeadLetters(t, dlq, 1)[poison.ID]
	lost := tally.AwaitDelivered(timeout(t, deliveryTimeout))
	mu.Lock()
	defer mu.Unlock()
	t.Logf("poison: %s; poison attempts %d, dead-lettered %d", tally.Report(), poisonAttempts, consumer.Stats().DeadLettered)
	switch {
	case dl == nil:
		t.Fatalf("the poison message was not dead-lettered")
	case dl.Extensions[driver.ExtDeadLetterAttempts] != strconv.Itoa(busRetry.MaxAttempts):
		t.Errorf("dead letter says %s attempts, want %d", dl.Extensions[driver.ExtDeadLetterAttempts], busRetry.MaxAttempts)
	case poisonAttempts != busRetry.MaxAttempts:
		t.Errorf("the poison message was tried %d times, want exactly %d", poisonAttempts, busRetry.MaxAttempts)
	case len(lost) > 0:
		t.Errorf("%d messages behind the poison never handled, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

func (s *suite) testHandlerPanics(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requirePattern(t, driver.DeadLetter)
	typ := "dt.fault.panic." + unique()
	origin := driver.NewDestination(driver.Event, typ)
	dlq := subscribe(t, s.open(t), driver.DeadLetterOf(origin), driver.SubscribeOptions{Group: s.group(), Durable: s.caps.Durable})
	tally := faults.NewTally()
	var mu sync.Mutex
	calls := map[string]int{}
	faultBus(t, "consumer", s.open(t), func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, s.group(), eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			mu.Lock()
			calls[m.ID]++
			first := calls[m.ID] == 1
			mu.Unlock()
			if m.Subject == "always" || first {
				panic("handler panics on " + m.ID)
			}
			tally.Delivered(m.ID)
			return nil
		}), eventbus.WithConcurrency(4)))
	})
	pub := faultBus(t, "publisher", s.open(t), nil)
	always := &eventbus.Message{ID: "always-" + unique(), Type: typ, Subject: "always"}
	if err := pub.PublishEvent(timeout(t, opTimeout), always); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, pub, typ, "once", 30, tally, nil)
	dl := awaitDeadLetters(t, dlq, 1)[always.ID]
	lost := tally.AwaitDelivered(timeout(t, deliveryTimeout))
	mu.Lock()
	defer mu.Unlock()
	t.Logf("panics: %s; the always-panicking message ran %d times", tally.Report(), calls[always.ID])
	switch {
	case dl == nil:
		t.Fatal("the always-panicking message was not dead-lettered")
	case !strings.Contains(dl.Extensions[driver.ExtDeadLetterReason], "panic"):
		t.Errorf("dead-letter reason %q does not name the panic", dl.Extensions[driver.ExtDeadLetterReason])
	case calls[always.ID] != busRetry.MaxAttempts:
		t.Errorf("the always-panicking message ran %d times, want %d", calls[always.ID], busRetry.MaxAttempts)
	case len(lost) > 0:
		t.Errorf("%d messages that panicked once were never handled, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

func (s *suite) testSlowConsumer(t *testing.T) {
	s.skipLimitation(t)
	s.requirePattern(t, driver.Event)
	const (
		total, slow = 200, 4
		maxInFlight = 16
		ackWait     = 2 * time.Second
	)
	typ := "dt.fault.slow." + unique()
	tally := faults.NewTally()
	held := &holdCounter{}
	faultBus(t, "consumer", held.wrap(s.open(t)), func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, s.group(), eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			pause := 2 * time.Millisecond
			if m.Subject == "slow" {
				pause = ackWait + ackWait/2
			}
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return ctx.Err()
			}
			tally.Delivered(m.ID)
			return nil
		}), eventbus.WithConcurrency(4), eventbus.WithMaxInFlight(maxInFlight), eventbus.WithAckWait(ackWait)))
	})
	pub := faultBus(t, "publisher", s.open(t), nil)
	publishEvents(t, pub, typ, "slow", total, tally, func(i int, m *eventbus.Message) {
		if i%(total/slow) == 0 {
			m.Subject = "slow"
		}
	})
	lost := tally.AwaitDelivered(timeout(t, deliveryTimeout+2*ackWait))
	rep := tally.Report()
	t.Logf("slow consumer: %s; at most %d deliveries held at once (MaxInFlight %d), %d handlers slower than the ack wait %v",
		rep, held.peak(), maxInFlight, slow, ackWait)
	if len(lost) > 0 {
		t.Errorf("%d messages never handled, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	if rep.Duplicated > 0 {
		t.Errorf("%d redeliveries of messages whose handler was running or done: a redelivery storm", rep.Duplicated)
	}
	if p := held.peak(); p > maxInFlight {
		t.Errorf("the process held %d deliveries at once, more than MaxInFlight %d", p, maxInFlight)
	}
}

func (s *suite) testGracefulShutdown(t *testing.T) {
	s.requirePattern(t, driver.Event)
	s.requireCaps(t, "Durable", "ConsumerGroups")
	const total, drainDeadline = 400, 5 * time.Second
	typ := "dt.fault.shutdown." + unique()
	group := "shutdown" + unique()
	tally := faults.NewTally()
	var started, finished, afterClose atomic.Int64
	var closed atomic.Bool
	handler := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		started.Add(1)
		defer finished.Add(1)
		time.Sleep(10 * time.Millisecond) // work that does not watch ctx
		tally.Delivered(m.ID)
		return nil
	})
	first := eventbus.New(&eventbus.Options{Source: "consumer-1", Retry: busRetry})
	if err := first.Register("backend", s.open(t)); err != nil {
		t.Fatal(err)
	}
	firstHandler := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		if closed.Load() {
			afterClose.Add(1)
		}
		return handler(ctx, m)
	})
	if err := errOnly(first.SubscribeEvents(context.Background(), []string{typ}, group, firstHandler, eventbus.WithConcurrency(8))); err != nil {
		t.Fatal(err)
	}
	if err := first.Start(timeout(t, opTimeout)); err != nil {
		t.Fatal(err)
	}
	pub := faultBus(t, "publisher", s.open(t), nil)
	var wg sync.WaitGroup
	wg.Go(func() { publishEvents(t, pub, typ, "load", total, tally, nil) })
	if !waitUntil(deliveryTimeout, func() bool { return started.Load() >= total/4 }) {
		t.Fatalf("only %d of %d handled before the shutdown", started.Load(), total/4)
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainDeadline)
	begin := time.Now()
	err := first.Close(ctx)
	took := time.Since(begin)
	cancel()
	closed.Store(true)
	inFlight := started.Load() - finished.Load()
	handledByFirst := finished.Load()
	if err != nil {
		t.Errorf("Close under load: %v", err)
	}
	wg.Wait()
	faultBus(t, "consumer-2", s.open(t), func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, handler, eventbus.WithConcurrency(8)))
	})
	lost := tally.AwaitDelivered(timeout(t, deliveryTimeout))
	t.Logf("graceful shutdown: %s; Close took %v (deadline %v), %d handled before it returned, %d left running, %d started by the closed bus afterwards",
		tally.Report(), took.Round(time.Millisecond), drainDeadline, handledByFirst, inFlight, afterClose.Load())
	if took > drainDeadline+time.Second {
		t.Errorf("Close took %v, past its deadline %v", took, drainDeadline)
	}
	if afterClose.Load() > 0 {
		t.Errorf("the closed bus started %d handlers after Close returned", afterClose.Load())
	}
	if inFlight != 0 {
		t.Errorf("%d handlers were still running when Close returned", inFlight)
	}
	if len(lost) > 0 {
		t.Errorf("%d messages lost across the shutdown, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}

	// A handler that never returns does not hold Close past its deadline.
	stuckType := "dt.fault.stuck." + unique()
	entered := make(chan struct{}, 1)
	stuck := eventbus.New(&eventbus.Options{Source: "stuck", Retry: busRetry})
	if err := stuck.Register("backend", s.open(t)); err != nil {
		t.Fatal(err)
	}
	if err := errOnly(stuck.SubscribeEvents(context.Background(), []string{stuckType}, group, eventbus.HandlerFunc(func(ctx context.Context, _ *eventbus.Message) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}))); err != nil {
		t.Fatal(err)
	}
	if err := stuck.Start(timeout(t, opTimeout)); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishEvent(timeout(t, opTimeout), &eventbus.Message{Type: stuckType}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(deliveryTimeout):
		t.Fatal("the stuck handler never ran")
	}
	const short = 300 * time.Millisecond
	ctx, cancel = context.WithTimeout(context.Background(), short)
	defer cancel()
	begin = time.Now()
	_ = stuck.Close(ctx)
	if took := time.Since(begin); took > short+2*time.Second {
		t.Errorf("Close with a stuck handler took %v, deadline %v", took, short)
	} else {
		t.Logf("Close with a stuck handler returned after %v (deadline %v)", took.Round(time.Millisecond), short)
	}
}

// holdCounter wraps a driver to count the deliveries its subscriptions
// handed out and that are not settled yet: what the process holds.
type holdCounter struct {
	mu        sync.Mutex
	now, most int
}

func (h *holdCounter) add(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now += n
	h.most = max(h.most, h.now)
}

func (h *holdCounter) peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.most
}

func (h *holdCounter) wrap(d driver.Driver) driver.Driver { return &holdingDriver{Driver: d, h: h} }

type holdingDriver struct {
	driver.Driver
	h *holdCounter
}

func (d *holdingDriver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	sub, err := d.Driver.Subscribe(ctx, dest, opts)
	if err != nil {
		return nil, err
	}
	return &holdingSub{Subscription: sub, h: d.h}, nil
}

type holdingSub struct {
	driver.Subscription
	h *holdCounter
}

func (s *holdingSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	ds, err := s.Subscription.Receive(ctx, max)
	s.h.add(len(ds))
	return ds, err
}

func (s *holdingSub) Ack(ctx context.Context, ds []*driver.Delivery) error {
	s.h.add(-len(ds))
	return s.Subscription.Ack(ctx, ds)
}

func (s *holdingSub) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	s.h.add(-len(ds))
	return s.Subscription.Nack(ctx, ds, delay)
}

func (s *holdingSub) Term(ctx context.Context, ds []*driver.Delivery) error {
	s.h.add(-len(ds))
	return s.Subscription.Term(ctx, ds)
}
