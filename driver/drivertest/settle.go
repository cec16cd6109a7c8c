package drivertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testSettlement runs the tests of Ack, Nack, Term and durable groups. Most
// of their time goes into waiting for a redelivery that must not happen, so
// they run in parallel.
func (s *suite) testSettlement(t *testing.T) {
	t.Run("AckNoRedelivery", s.testAckNoRedelivery)
	t.Run("AckWaitRedelivers", s.testAckWaitRedelivers)
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

// redeliveryWindow is how long a test watches for a redelivery that must not
// happen: past the ack wait, with a margin for the broker's timers.
const redeliveryWindow = ackWait + 500*time.Millisecond

func (s *suite) testAckNoRedelivery(t *testing.T) {
	t.Parallel()
	dst := dest(s.groupPattern(t), "ack")
	sub := subscribe(t, s.open(t), dst, s.settleOptions())
	m := newMessage("ack-1")
	publish(t, s.open(t), dst, m)
	d := receiveOne(t, sub)
	checkMessage(t, m, d.Message)
	ack(t, sub, d)
	expectNone(t, sub, redeliveryWindow, "the message was acked")
}

// testAckWaitRedelivers checks that a delivery left unsettled, as by a
// consumer stuck or gone without closing, comes back after the ack wait.
func (s *suite) testAckWaitRedelivers(t *testing.T) {
	s.requireCaps(t, "Redelivery")
	t.Parallel()
	dst := dest(s.groupPattern(t), "ackwait")
	sub := subscribe(t, s.open(t), dst, s.settleOptions())
	m := newMessage("ackwait-1")
	publish(t, s.open(t), dst, m)

	first := receiveOne(t, sub)
	start := time.Now()
	again := receiveOne(t, sub)
	elapsed := time.Since(start)
	checkMessage(t, m, again.Message)
	t.Logf("redelivered %s after the first delivery, with AckWait %s", elapsed.Round(time.Millisecond), ackWait)
	if elapsed < ackWait/2 {
		t.Errorf("an unsettled delivery came back after %s, well before its AckWait of %s", elapsed, ackWait)
	}
	if again.Attempt != first.Attempt+1 {
		t.Errorf("redelivery after AckWait has Attempt %d, want %d", again.Attempt, first.Attempt+1)
	}
	ack(t, sub, again)
	expectNone(t, sub, quietWindow, "the redelivered message was acked")
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
