package drivertest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testSettlement runs the tests of Ack, Nack, Term and durable groups. Most
// of their time goes into waiting for a redelivery that must not happen, so
// they run in parallel.
func (s *suite) testSettlement(t *testing.T) {
	t.Run("AckNoRedelivery", s.testAckNoRedelivery)
	t.Run("HeldBatch", s.testHeldBatch)
	t.Run("CloseGivesBack", s.testCloseGivesBack)
	t.Run("CrashRedelivers", s.testCrashRedelivers)
	t.Run("NackRedelivers", s.testNackRedelivers)
	t.Run("NackDelay", s.testNackDelay)
	t.Run("TermNoRedelivery", s.testTermNoRedelivery)
	t.Run("UnsettledAfterResubscribe", s.testUnsettledAfterResubscribe)
	t.Run("DurableResume", s.testDurableResume)
	t.Run("MaxInFlight", s.testMaxInFlight)
}

// settleOptions are the options of a subscription whose settlement is under
// test: a short ack wait, so that a wrong redelivery shows within the test.
func (s *suite) settleOptions() driver.SubscribeOptions {
	return driver.SubscribeOptions{Group: s.group(), AckWait: ackWait}
}

const (
	// redeliveryWindow is how long a test watches for a redelivery that must
	// not happen: past the ack wait, with a margin for the broker's timers.
	redeliveryWindow = ackWait + 500*time.Millisecond
	// longAckWait is the AckWait of tests in which a delivery must come back
	// at once, not at its deadline: far beyond giveBackBound.
	longAckWait = 30 * time.Second
	// giveBackBound bounds the time a closing member takes to give back what
	// it holds, until another member has it.
	giveBackBound = 5 * time.Second
)

// testAckNoRedelivery checks that an acked message is not delivered again:
// not to its subscription past the ack wait, and not to another member of
// its group once the subscription closed, which gives back only what it did
// not settle.
func (s *suite) testAckNoRedelivery(t *testing.T) {
	t.Parallel()
	dst := dest(s.groupPattern(t), "ack")
	opts := s.settleOptions()
	sub := subscribe(t, s.open(t), dst, opts)
	m := newMessage("ack-1")
	publish(t, s.open(t), dst, m)
	d := receiveOne(t, sub)
	checkMessage(t, m, d.Message)
	ack(t, sub, d)
	if !s.caps.ConsumerGroups {
		expectNone(t, sub, redeliveryWindow, "the message was acked")
		return
	}
	other := subscribe(t, s.open(t), dst, opts)
	closeSubscription(t, sub)
	expectNone(t, other, redeliveryWindow, "the message was acked before its subscription closed")
}

// testHeldBatch checks settlement latency and ack-deadline keeping: one
// delivery of a batch is acked while the other is held unsettled, past the
// ack wait, by a live subscription. Neither comes back, to the holder or to
// another member of its group: the ack reached the broker without waiting for
// the rest of the batch, and the driver kept the held one's deadline. When
// the holder closes, the held one goes to the other member promptly, and the
// acked one still does not.
func (s *suite) testHeldBatch(t *testing.T) {
	t.Parallel()
	dst := dest(s.groupPattern(t), "heldbatch")
	opts := s.settleOptions()
	holder := subscribe(t, s.open(t), dst, opts)
	msgs := newMessages("held", 2)
	publish(t, s.open(t), dst, msgs...)
	batch := receive(t, holder, 2, 2)
	acked, held := batch[0], batch[1]
	ack(t, holder, acked)

	watchers := []driver.Subscription{holder}
	var other driver.Subscription
	if s.caps.ConsumerGroups {
		other = subscribe(t, s.open(t), dst, opts)
		watchers = append(watchers, other)
	}
	var wg sync.WaitGroup
	for _, sub := range watchers {
		wg.Go(func() {
			expectNone(t, sub, redeliveryWindow, fmt.Sprintf(
				"one delivery was acked and the other is held unsettled by a live subscription past the AckWait of %s", ackWait))
		})
	}
	wg.Wait()

	if other == nil || !s.caps.Redelivery {
		// Nobody else can take the held delivery: it is still the holder's
		// to settle.
		ack(t, holder, held)
		return
	}
	closeSubscription(t, holder)
	start := time.Now()
	again := receiveWithin(t, other, 1, 1, giveBackBound)[0]
	t.Logf("the held delivery reached the other member %s after its holder closed", time.Since(start).Round(time.Millisecond))
	if again.Message.ID != held.Message.ID {
		t.Errorf("after the holder closed, the other member received %q, want the held %q (%q was acked)",
			again.Message.ID, held.Message.ID, acked.Message.ID)
	}
	checkMessage(t, msgByID(msgs, again.Message.ID), again.Message)
	ack(t, other, again)
	expectNone(t, other, quietWindow, "the only unsettled delivery was given back and acked")
}

// testCloseGivesBack checks that a member that closes, its subscription or
// its driver, gives what it holds back at once: with an ack wait of 30 s,
// another member receives every message within giveBackBound.
func (s *suite) testCloseGivesBack(t *testing.T) {
	s.requireCaps(t, "Redelivery", "ConsumerGroups")
	t.Parallel()
	const rounds, n = 4, 20
	for round := range rounds {
		how := "its subscription"
		if round%2 == 1 {
			how = "its driver"
		}
		dst := dest(s.groupPattern(t), "giveback")
		opts := driver.SubscribeOptions{Group: s.group(), AckWait: longAckWait}
		conn := s.open(t)
		leaving := subscribe(t, conn, dst, opts)
		msgs := newMessages("giveback", n)
		publish(t, s.open(t), dst, msgs...)
		// The leaving member holds what Receive gave it, and its driver may
		// have more buffered.
		held := receive(t, leaving, 1, 5)
		staying := startConsumer(t, subscribe(t, s.open(t), dst, opts), 10)
		start := time.Now()
		if round%2 == 1 {
			closeDriver(t, conn)
		} else {
			closeSubscription(t, leaving)
		}
		if !awaitIDsWithin(t, ids(msgs), giveBackBound, staying) {
			t.Fatalf("round %d: a member holding %d unsettled deliveries closed %s; with an AckWait of %s, the other member did not receive every message within %s",
				round+1, len(held), how, longAckWait, giveBackBound)
		}
		t.Logf("round %d: after the member holding %d deliveries closed %s, the other had every message %s later",
			round+1, len(held), how, time.Since(start).Round(time.Millisecond))
		staying.stop()
		if dups := duplicates(staying.deliveries()); len(dups) > 0 {
			t.Logf("round %d: %d messages were delivered more than once: %s", round+1, len(dups), sample(dups))
		}
	}
}

// testCrashRedelivers checks that the unsettled delivery of a member whose
// process died goes to another member of the group once its ack wait is
// over.
func (s *suite) testCrashRedelivers(t *testing.T) {
	if s.h.Crash == nil {
		t.Skip("Harness.Crash is not set: the suite cannot simulate a process that dies")
	}
	s.requireCaps(t, "Redelivery", "ConsumerGroups")
	t.Parallel()
	dst := dest(s.groupPattern(t), "crash")
	opts := s.settleOptions()
	victim := s.openCrashable(t)
	sub, err := victim.Subscribe(timeout(t, opTimeout), dst, opts)
	if err != nil {
		t.Fatalf("Subscribe(%s, %+v): %v", dst, opts, err)
	}
	m := newMessage("crash-1")
	publish(t, s.open(t), dst, m)
	first := receiveOne(t, sub)
	received := time.Now()
	other := subscribe(t, s.open(t), dst, opts)
	if err := s.h.Crash(victim); err != nil {
		t.Fatalf("Harness.Crash: %v", err)
	}
	again := receiveWithin(t, other, 1, 1, ackWait+deliveryTimeout)[0]
	t.Logf("redelivered %s after the first delivery, with AckWait %s", time.Since(received).Round(time.Millisecond), ackWait)
	checkMessage(t, m, again.Message)
	if again.Attempt != first.Attempt+1 {
		t.Errorf("redelivery after a crash has Attempt %d, want %d", again.Attempt, first.Attempt+1)
	}
	ack(t, other, again)
	expectNone(t, other, quietWindow, "the redelivered message was acked")
}

func (s *suite) testNackRedelivers(t *testing.T) {
	s.requireCaps(t, "Redelivery")
	t.Parallel()
	dst := dest(s.groupPattern(t), "nack")
	sub := subscribe(t, s.open(t), dst, s.settleOptions())
	m := newMessage("nack-1")
	publish(t, s.open(t), dst, m)

	first := receiveOne(t, sub)
	if first.Attempt != 1 {
		t.Errorf("first delivery has Attempt %d, want 1", first.Attempt)
	}
	for range 2 {
		nack(t, sub, 0, first)
		again := receiveOne(t, sub)
		checkMessage(t, m, again.Message)
		if again.Attempt != first.Attempt+1 {
			t.Errorf("redelivery after Nack has Attempt %d, want %d", again.Attempt, first.Attempt+1)
		}
		first = again
	}
	ack(t, sub, first)
	expectNone(t, sub, quietWindow, "the redelivered message was acked")
}

func (s *suite) testNackDelay(t *testing.T) {
	s.requireCaps(t, "Redelivery", "NativeDelay")
	t.Parallel()
	const (
		delay     = 2 * time.Second
		tolerance = 500 * time.Millisecond
	)
	dst := dest(s.groupPattern(t), "nackdelay")
	sub := subscribe(t, s.open(t), dst, s.settleOptions())
	m := newMessage("nackdelay-1")
	publish(t, s.open(t), dst, m)

	d := receiveOne(t, sub)
	start := time.Now()
	nack(t, sub, delay, d)
	expectNone(t, sub, delay-tolerance-time.Since(start), fmt.Sprintf("the message was nacked with a delay of %s", delay))
	again := receiveOne(t, sub)
	elapsed := time.Since(start)
	checkMessage(t, m, again.Message)
	t.Logf("redelivered %s after Nack with delay %s", elapsed.Round(time.Millisecond), delay)
	if again.Attempt != d.Attempt+1 {
		t.Errorf("redelivery after Nack has Attempt %d, want %d", again.Attempt, d.Attempt+1)
	}
	ack(t, sub, again)
}

func (s *suite) testTermNoRedelivery(t *testing.T) {
	t.Parallel()
	dst := dest(s.groupPattern(t), "term")
	sub := subscribe(t, s.open(t), dst, s.settleOptions())
	m := newMessage("term-1")
	publish(t, s.open(t), dst, m)
	d := receiveOne(t, sub)
	settle(t, "Term", sub.Term, []*driver.Delivery{d})
	expectNone(t, sub, redeliveryWindow, "the message was termed")

	// The subscription goes on delivering after a Term.
	next := newMessage("term-2")
	publish(t, s.open(t), dst, next)
	d = receiveOne(t, sub)
	checkMessage(t, next, d.Message)
	ack(t, sub, d)
}

// testUnsettledAfterResubscribe checks that a delivery its member neither
// acked nor nacked before leaving goes to the next member of the durable
// group.
func (s *suite) testUnsettledAfterResubscribe(t *testing.T) {
	s.requireCaps(t, "Durable")
	t.Parallel()
	dst := dest(s.groupPattern(t), "unsettled")
	opts := s.settleOptions()
	opts.Durable = true
	if opts.Group == "" {
		opts.Group = "dtgroup" + unique()
	}
	first := subscribe(t, s.open(t), dst, opts)
	m := newMessage("unsettled-1")
	publish(t, s.open(t), dst, m)
	d := receiveOne(t, first)
	checkMessage(t, m, d.Message)
	closeSubscription(t, first)

	second := subscribe(t, s.open(t), dst, opts)
	again := receiveOne(t, second)
	checkMessage(t, m, again.Message)
	if again.Attempt < 2 {
		t.Logf("redelivery to a new member reports Attempt %d; the broker does not count deliveries across members", again.Attempt)
	}
	ack(t, second, again)
	expectNone(t, second, quietWindow, "the redelivered message was acked")
}

// testDurableResume checks that a durable group, when a member comes back,
// receives exactly the messages it had not acked: those it received and left
// unsettled, and those published while no member was connected.
func (s *suite) testDurableResume(t *testing.T) {
	s.requireCaps(t, "Durable")
	t.Parallel()
	dst := dest(s.groupPattern(t), "durable")
	opts := s.settleOptions()
	opts.Durable = true
	if opts.Group == "" {
		opts.Group = "dtgroup" + unique()
	}
	pub := s.open(t)
	before := newMessages("before", 10)
	after := newMessages("after", 10)

	conn := s.open(t)
	sub := subscribe(t, conn, dst, opts)
	publish(t, pub, dst, before...)
	acked := make(map[string]bool)
	for len(acked) < 5 {
		d := receiveOne(t, sub)
		ack(t, sub, d)
		acked[d.Message.ID] = true
	}
	// The member's instance shuts down.
	closeSubscription(t, sub)
	closeDriver(t, conn)

	publish(t, pub, dst, after...)
	var want []*driver.Message
	for _, m := range append(before, after...) {
		if !acked[m.ID] {
			want = append(want, m)
		}
	}
	c := startConsumer(t, subscribe(t, s.open(t), dst, opts), 10)
	waitForIDs(t, ids(want), c)
	// Watch past the ack wait: an acked message that comes back would.
	time.Sleep(redeliveryWindow - quietWindow)
	got := c.deliveries()

	n := countIDs(got)
	for id := range acked {
		if n[id] > 0 {
			t.Errorf("message %q was acked before the member left, but the group received it again", id)
		}
	}
	var dups []string
	for _, m := range want {
		if n[m.ID] > 1 {
			dups = append(dups, m.ID)
		}
	}
	if len(dups) > 0 {
		t.Logf("%d messages were delivered more than once after the group resumed: %s", len(dups), sample(dups))
	}
	first := make([]*driver.Delivery, 0, len(got))
	seen := make(map[string]bool)
	for _, d := range got {
		if !acked[d.Message.ID] && !seen[d.Message.ID] {
			seen[d.Message.ID] = true
			first = append(first, d)
		}
	}
	checkExactlyOnce(t, "the resumed group", want, first)
}

// testMaxInFlight checks that a subscription hands out no more than
// MaxInFlight unsettled deliveries, and more once some are settled.
func (s *suite) testMaxInFlight(t *testing.T) {
	t.Parallel()
	const limit, total = 5, 20
	dst := dest(s.groupPattern(t), "maxinflight")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group(), MaxInFlight: limit})
	msgs := newMessages("inflight", total)
	publish(t, s.open(t), dst, msgs...)

	// Receive until the subscription makes us wait: that is the bound.
	held := receive(t, sub, 1, total)
	for {
		ds, err := sub.Receive(timeout(t, quietWindow), total)
		if err != nil {
			break
		}
		held = append(held, checkBatch(t, ds, total)...)
	}
	if len(held) > limit {
		t.Errorf("%d deliveries unsettled at once with MaxInFlight %d", len(held), limit)
	}
	got := held
	for len(got) < total {
		ack(t, sub, held...)
		held = receive(t, sub, 1, total)
		got = append(got, held...)
	}
	ack(t, sub, held...)
	checkExactlyOnce(t, "the subscriber", msgs, got)
}
