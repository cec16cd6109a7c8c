package drivertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// deliveryTimeout bounds the wait for deliveries that must arrive: generous,
// since it costs nothing when they do, and a loaded 2-core machine running
// an emulator (fauxqs hands out one FIFO message per group per receive)
// can take tens of seconds for a batch test. The suite's self-test shortens
// it (export_test.go), to fail faster on its faulty drivers.
var deliveryTimeout = 30 * time.Second

// Bounds of every wait. A broker that is merely slow stays well inside them;
// one that lost a message or hangs fails the test instead of stalling it.
const (
	// opTimeout bounds one call that is expected to succeed: open, publish,
	// subscribe, settle, close.
	opTimeout = 10 * time.Second
	// quietWindow is how long the suite watches for deliveries that must not
	// arrive (duplicates, refused messages) once the expected ones are in.
	quietWindow = 300 * time.Millisecond
	// promptly bounds a call that must return at once (Receive after Close).
	promptly = 2 * time.Second
	// ackWait is the SubscribeOptions.AckWait of the settlement tests: short,
	// so that a redelivery that must not happen would happen within the test.
	ackWait = time.Second
)

// pattern returns the first of prefs that the driver serves.
func (s *suite) pattern(prefs ...driver.Pattern) (driver.Pattern, bool) {
	for _, p := range prefs {
		if s.caps.Serves(p) {
			return p, true
		}
	}
	return 0, false
}

// groupPattern returns a persistent-style pattern for tests of groups and
// settlement, or skips the test when the driver serves none.
func (s *suite) groupPattern(t *testing.T, prefs ...driver.Pattern) driver.Pattern {
	t.Helper()
	if len(prefs) == 0 {
		prefs = []driver.Pattern{driver.Event, driver.Command, driver.Stream}
	}
	p, ok := s.pattern(prefs...)
	if !ok {
		t.Skipf("driver serves none of the patterns %v", prefs)
	}
	return p
}

// anyPattern returns a pattern that Publish and Subscribe serve, preferring
// events, or skips the test.
func (s *suite) anyPattern(t *testing.T) driver.Pattern {
	t.Helper()
	return s.groupPattern(t, driver.Event, driver.Command, driver.Stream, driver.Broadcast, driver.DeadLetter)
}

// group returns a fresh group name when the driver has consumer groups, and
// "" (a private subscription) otherwise.
func (s *suite) group() string {
	if !s.caps.ConsumerGroups {
		return ""
	}
	return "dtgroup" + unique()
}

func (s *suite) requireCaps(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		var ok bool
		switch n {
		case "Durable":
			ok = s.caps.Durable
		case "ConsumerGroups":
			ok = s.caps.ConsumerGroups
		case "OrderingByKey":
			ok = s.caps.OrderingByKey
		case "Redelivery":
			ok = s.caps.Redelivery
		case "NativeDelay":
			ok = s.caps.NativeDelay
		case "NativeRequestReply":
			ok = s.caps.NativeRequestReply
		default:
			t.Fatalf("drivertest: unknown capability %q", n)
		}
		if !ok {
			t.Skipf("driver %s does not claim capability %s", s.caps.Name, n)
		}
	}
}

// unique returns a random suffix for destination and group names.
func unique() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// dest returns a destination of pattern p that no other test, run or leftover
// state uses.
func dest(p driver.Pattern, name string) driver.Destination {
	return driver.NewDestination(p, "drivertest", name, unique())
}

// timeout returns a context that ends after d or when the test ends.
func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// open opens a connection and closes it when the test ends.
func (s *suite) open(t *testing.T) driver.Driver {
	t.Helper()
	d := s.dial(t)
	t.Cleanup(func() { closeDriver(t, d) })
	return d
}

// openCrashable opens a connection that the test may pass to Harness.Crash.
// It is closed when the test ends, and any error of that Close is only
// logged: a connection whose process "died" may not close cleanly.
func (s *suite) openCrashable(t *testing.T) driver.Driver {
	t.Helper()
	d := s.dial(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Logf("Driver.Close after Harness.Crash: %v", err)
		}
	})
	return d
}

// dial opens a connection through the harness.
func (s *suite) dial(t *testing.T) driver.Driver {
	t.Helper()
	s.skipLimitation(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	d, err := s.h.Open(ctx)
	if err != nil {
		t.Fatalf("Harness.Open: %v", err)
	}
	if d == nil {
		t.Fatal("Harness.Open returned a nil driver and no error")
	}
	return d
}

// closeDriver closes d; closing a driver twice must be harmless.
func closeDriver(t *testing.T, d driver.Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := d.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Driver.Close: %v", err)
	}
}

// subscribe opens a subscription and closes it when the test ends.
func subscribe(t *testing.T, d driver.Driver, dst driver.Destination, opts driver.SubscribeOptions) driver.Subscription {
	t.Helper()
	sub, err := d.Subscribe(timeout(t, opTimeout), dst, opts)
	if err != nil {
		t.Fatalf("Subscribe(%s, %+v): %v", dst, opts, err)
	}
	if sub == nil {
		t.Fatalf("Subscribe(%s) returned a nil subscription and no error", dst)
	}
	t.Cleanup(func() { closeSubscription(t, sub) })
	return sub
}

// closeSubscription closes sub; closing twice, or after its driver closed,
// must be harmless.
func closeSubscription(t *testing.T, sub driver.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := sub.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Subscription.Close: %v", err)
	}
}

func publish(t *testing.T, d driver.Driver, dst driver.Destination, msgs ...*driver.Message) {
	t.Helper()
	if err := d.Publish(timeout(t, opTimeout), dst, msgs); err != nil {
		t.Fatalf("Publish %d message(s) to %s: %v", len(msgs), dst, err)
	}
}

// newMessage returns a publishable message named name. Its id is name with a
// random suffix: brokers that de-duplicate by id (JetStream's Nats-Msg-Id,
// SQS FIFO) must not drop a message of a previous run. Its Data is derived
// from the id, so that content can be checked from the id alone.
func newMessage(name string) *driver.Message {
	return messageWithID(name + "-" + unique())
}

func messageWithID(id string) *driver.Message {
	return &driver.Message{
		ID:     id,
		Source: "/drivertest",
		Type:   "drivertest.message",
		Time:   time.Now(),
		Data:   payload(id),
	}
}

func payload(id string) []byte { return []byte("data of " + id) }

// newMessages returns n messages with ids prefix-<random>-0 …
// prefix-<random>-(n-1).
func newMessages(prefix string, n int) []*driver.Message {
	prefix += "-" + unique()
	msgs := make([]*driver.Message, n)
	for i := range msgs {
		msgs[i] = messageWithID(fmt.Sprintf("%s-%d", prefix, i))
	}
	return msgs
}

func ids(msgs []*driver.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func deliveryIDs(ds []*driver.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Message.ID
	}
	return out
}

// checkDelivery reports a delivery that is not a well-formed first or later
// delivery of a normal message. It is safe to call from any goroutine while
// the test runs.
func checkDelivery(t *testing.T, d *driver.Delivery) bool {
	t.Helper()
	switch {
	case d == nil:
		t.Errorf("Receive returned a nil delivery")
	case d.Message == nil:
		t.Errorf("Receive returned a delivery with a nil Message (Err %v)", d.Err)
	case d.Err != nil:
		t.Errorf("delivery %q of a well-formed message has Err set: %v", d.Message.ID, d.Err)
	case d.Attempt < 1:
		t.Errorf("delivery %q has Attempt %d, want at least 1", d.Message.ID, d.Attempt)
	default:
		return true
	}
	return false
}

// checkBatch reports a Receive result that breaks the contract: more than
// max deliveries, or none with a nil error.
func checkBatch(t *testing.T, ds []*driver.Delivery, max int) []*driver.Delivery {
	t.Helper()
	if len(ds) == 0 {
		t.Errorf("Receive(max %d) returned an empty batch and a nil error", max)
	}
	if len(ds) > max {
		t.Errorf("Receive(max %d) returned %d deliveries", max, len(ds))
	}
	ok := ds[:0:0]
	for _, d := range ds {
		if checkDelivery(t, d) {
			ok = append(ok, d)
		}
	}
	return ok
}

// receive receives until n deliveries arrived, asking for at most max at a
// time, and returns them unsettled. It fails the test when they do not arrive
// within deliveryTimeout.
func receive(t *testing.T, sub driver.Subscription, n, max int) []*driver.Delivery {
	t.Helper()
	return receiveWithin(t, sub, n, max, deliveryTimeout)
}

// receiveWithin is receive with a bound of its own.
func receiveWithin(t *testing.T, sub driver.Subscription, n, max int, bound time.Duration) []*driver.Delivery {
	t.Helper()
	ctx := timeout(t, bound)
	var got []*driver.Delivery
	for len(got) < n {
		ds, err := sub.Receive(ctx, max)
		if err != nil {
			t.Fatalf("Receive: got %d of %d deliveries %v within %s: %v", len(got), n, deliveryIDs(got), bound, err)
		}
		got = append(got, checkBatch(t, ds, max)...)
	}
	return got
}

// receiveAndAck is receive with every batch acked as it arrives, so that a
// driver's default bound on unsettled deliveries never stalls it.
func receiveAndAck(t *testing.T, sub driver.Subscription, n, max int) []*driver.Delivery {
	t.Helper()
	var got []*driver.Delivery
	for len(got) < n {
		ds := receive(t, sub, 1, max)
		ack(t, sub, ds...)
		got = append(got, ds...)
	}
	return got
}

// receiveOne receives exactly one delivery.
func receiveOne(t *testing.T, sub driver.Subscription) *driver.Delivery {
	t.Helper()
	return receive(t, sub, 1, 1)[0]
}

// expectNone fails the test if sub delivers anything within window.
func expectNone(t *testing.T, sub driver.Subscription, window time.Duration, why string) {
	t.Helper()
	ctx := timeout(t, window)
	ds, err := sub.Receive(ctx, 100)
	switch {
	case err == nil:
		got := checkBatch(t, ds, 100)
		attempts := make([]int, len(got))
		for i, d := range got {
			attempts[i] = d.Attempt
		}
		t.Errorf("%s, but received %v (attempts %v)", why, deliveryIDs(got), attempts)
	case !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("Receive while expecting nothing: %v, want the context's deadline", err)
	}
}

func settle(t *testing.T, what string, fn func(context.Context, []*driver.Delivery) error, ds []*driver.Delivery) {
	t.Helper()
	if err := fn(timeout(t, opTimeout), ds); err != nil {
		t.Fatalf("%s %v: %v", what, deliveryIDs(ds), err)
	}
}

func ack(t *testing.T, sub driver.Subscription, ds ...*driver.Delivery) {
	t.Helper()
	settle(t, "Ack", sub.Ack, ds)
}

func nack(t *testing.T, sub driver.Subscription, delay time.Duration, ds ...*driver.Delivery) {
	t.Helper()
	settle(t, "Nack", func(ctx context.Context, ds []*driver.Delivery) error { return sub.Nack(ctx, ds, delay) }, ds)
}

// diffMessage lists every difference between the sent want and the received
// got. Time may lose precision below a millisecond; nil and empty maps and
// data are the same.
func diffMessage(want, got *driver.Message) []string {
	var diffs []string
	str := func(name, w, g string) {
		if w != g {
			diffs = append(diffs, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	str("ID", want.ID, got.ID)
	str("Source", want.Source, got.Source)
	str("Type", want.Type, got.Type)
	str("Subject", want.Subject, got.Subject)
	str("DataContentType", want.DataContentType, got.DataContentType)
	str("DataSchema", want.DataSchema, got.DataSchema)
	str("CorrelationID", want.CorrelationID, got.CorrelationID)
	str("CausationID", want.CausationID, got.CausationID)
	str("TraceParent", want.TraceParent, got.TraceParent)
	str("TraceState", want.TraceState, got.TraceState)
	str("ReplyTo", want.ReplyTo, got.ReplyTo)
	str("Key", want.Key, got.Key)
	if d := got.Time.Sub(want.Time); want.Time.IsZero() != got.Time.IsZero() || d <= -time.Millisecond || d >= time.Millisecond {
		diffs = append(diffs, fmt.Sprintf("Time = %s, want %s (at least millisecond precision)",
			got.Time.Format(time.RFC3339Nano), want.Time.Format(time.RFC3339Nano)))
	}
	if !maps.Equal(want.Extensions, got.Extensions) {
		diffs = append(diffs, fmt.Sprintf("Extensions = %v, want %v", got.Extensions, want.Extensions))
	}
	if !maps.EqualFunc(want.Header, got.Header, slices.Equal) {
		diffs = append(diffs, fmt.Sprintf("Header = %q, want %q", got.Header, want.Header))
	}
	if !bytes.Equal(want.Data, got.Data) {
		diffs = append(diffs, diffData(want.Data, got.Data))
	}
	return diffs
}

// diffData describes how got differs from want without printing megabytes.
func diffData(want, got []byte) string {
	if len(want) <= 64 && len(got) <= 64 {
		return fmt.Sprintf("Data = %q, want %q", got, want)
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	return fmt.Sprintf("Data has %d bytes, want %d; first difference at byte %d", len(got), len(want), i)
}

// checkMessage fails the test (from any goroutine) if got differs from want.
func checkMessage(t *testing.T, want, got *driver.Message) {
	t.Helper()
	if diffs := diffMessage(want, got); len(diffs) > 0 {
		t.Errorf("message %q arrived changed:\n\t%s", want.ID, strings.Join(diffs, "\n\t"))
	}
}

// consumer receives from a subscription in its own goroutine, acks every
// batch, and records what it received.
type consumer struct {
	t      *testing.T
	sub    driver.Subscription
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	got []*driver.Delivery
}

// startConsumer starts receiving from sub, max deliveries at a time. The
// consumer stops when the test ends, before sub is closed.
func startConsumer(t *testing.T, sub driver.Subscription, max int) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{t: t, sub: sub, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx, max)
	t.Cleanup(c.stop)
	return c
}

func (c *consumer) run(ctx context.Context, max int) {
	defer close(c.done)
	for {
		ds, err := c.sub.Receive(ctx, max)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
				c.t.Errorf("consumer: Receive: %v", err)
			}
			return
		}
		ds = checkBatch(c.t, ds, max)
		c.mu.Lock()
		c.got = append(c.got, ds...)
		c.mu.Unlock()
		if len(ds) == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, opTimeout)
		err = c.sub.Ack(actx, ds)
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
			c.t.Errorf("consumer: Ack: %v", err)
		}
	}
}

// stop ends the consumer's goroutine and waits for it.
func (c *consumer) stop() {
	c.cancel()
	waitStopped(c.t, c.done, "a consumer's Receive")
}

// waitStopped waits for a goroutine of the test to end after its context was
// cancelled. A driver that ignores the cancellation fails the test, and the
// goroutine is left behind rather than the suite hanging.
func waitStopped(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(opTimeout):
		t.Errorf("%s did not return within %s of its context's end", what, opTimeout)
	}
}

// deliveries returns what the consumer has received so far.
func (c *consumer) deliveries() []*driver.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// waitUntil polls done until it reports true or the deadline passes, and
// reports whether it did.
func waitUntil(deadline time.Duration, done func() bool) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(deadline)
	for !done() {
		if time.Now().After(end) {
			return false
		}
		<-tick.C
	}
	return true
}

// countIDs counts the deliveries of each message id.
func countIDs(ds []*driver.Delivery) map[string]int {
	n := make(map[string]int, len(ds))
	for _, d := range ds {
		n[d.Message.ID]++
	}
	return n
}

// waitForEach waits until every id in want was delivered to each consumer,
// then for a quiet window in which duplicates would show.
func waitForEach(t *testing.T, want []string, cs ...*consumer) {
	t.Helper()
	ok := true
	for _, c := range cs {
		ok = awaitIDs(t, want, c) && ok
	}
	if ok {
		time.Sleep(quietWindow)
	}
}

// waitForIDs waits until every id in want was delivered to the consumers
// together, then for a quiet window in which duplicates would show. It
// returns the per-consumer deliveries.
func waitForIDs(t *testing.T, want []string, cs ...*consumer) [][]*driver.Delivery {
	t.Helper()
	if awaitIDs(t, want, cs...) {
		time.Sleep(quietWindow)
	}
	out := make([][]*driver.Delivery, len(cs))
	for i, c := range cs {
		out[i] = c.deliveries()
	}
	return out
}

// awaitIDs waits until every id in want was delivered to the consumers
// together. It reports the missing ones as a test error.
func awaitIDs(t *testing.T, want []string, cs ...*consumer) bool {
	t.Helper()
	return awaitIDsWithin(t, want, deliveryTimeout, cs...)
}

// awaitIDsWithin is awaitIDs with a bound of its own.
func awaitIDsWithin(t *testing.T, want []string, bound time.Duration, cs ...*consumer) bool {
	t.Helper()
	missing := func() []string {
		n := make(map[string]int)
		for _, c := range cs {
			for _, d := range c.deliveries() {
				n[d.Message.ID]++
			}
		}
		var out []string
		for _, id := range want {
			if n[id] == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	if waitUntil(bound, func() bool { return len(missing()) == 0 }) {
		return true
	}
	m := missing()
	t.Errorf("%d of %d messages not delivered within %s: %s", len(m), len(want), bound, sample(m))
	return false
}

// duplicates lists the ids delivered more than once.
func duplicates(ds []*driver.Delivery) []string {
	var out []string
	for id, n := range countIDs(ds) {
		if n > 1 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// msgByID returns the message of msgs with id, or a message with that id
// alone (so that a comparison with it fails) when there is none.
func msgByID(msgs []*driver.Message, id string) *driver.Message {
	for _, m := range msgs {
		if m.ID == id {
			return m
		}
	}
	return &driver.Message{ID: id}
}

// sample shortens a long list of ids for an error message.
func sample(ids []string) string {
	const max = 10
	if len(ids) <= max {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v and %d more", ids[:max], len(ids)-max)
}

// checkExactlyOnce fails the test unless the deliveries hold each of msgs
// exactly once, with its content intact, and nothing else.
func checkExactlyOnce(t *testing.T, who string, msgs []*driver.Message, ds []*driver.Delivery) {
	t.Helper()
	byID := make(map[string]*driver.Message, len(msgs))
	for _, m := range msgs {
		byID[m.ID] = m
	}
	seen := make(map[string]int, len(ds))
	var unexpected, dups []string
	for _, d := range ds {
		m, ok := byID[d.Message.ID]
		if !ok {
			unexpected = append(unexpected, d.Message.ID)
			continue
		}
		seen[d.Message.ID]++
		if seen[d.Message.ID] == 2 {
			dups = append(dups, d.Message.ID)
		}
		if seen[d.Message.ID] == 1 {
			checkMessage(t, m, d.Message)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("%s received %d messages that were not published to it: %s", who, len(unexpected), sample(unexpected))
	}
	if len(dups) > 0 {
		t.Errorf("%s received %d messages more than once: %s", who, len(dups), sample(dups))
	}
	if len(seen) < len(msgs) {
		var missing []string
		for _, m := range msgs {
			if seen[m.ID] == 0 {
				missing = append(missing, m.ID)
			}
		}
		t.Errorf("%s received %d of %d messages; missing %s", who, len(seen), len(msgs), sample(missing))
	}
}

// skipLimitation skips a subtest that Harness.Limitations names, with the
// reason given there. Subtests are named by their path below the test that
// called the suite, such as "Settlement/CloseGivesBack".
func (s *suite) skipLimitation(t *testing.T) {
	t.Helper()
	_, rel, ok := strings.Cut(t.Name(), "/")
	if !ok {
		return
	}
	if why, limited := s.h.Limitations[rel]; limited {
		t.Skipf("known limitation of this broker: %s", why)
	}
}
