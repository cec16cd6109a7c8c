package drivertest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testCompetingConsumers checks that two members of one group, on two
// connections, share the messages: each is delivered once, and both members
// receive some.
func (s *suite) testCompetingConsumers(t *testing.T) {
	s.requireCaps(t, "ConsumerGroups")
	p := s.groupPattern(t)
	dst := dest(p, "compete")
	opts := driver.SubscribeOptions{Group: s.group()}
	a := startConsumer(t, subscribe(t, s.open(t), dst, opts), 10)
	b := startConsumer(t, subscribe(t, s.open(t), dst, opts), 10)

	msgs := newMessages("compete", 200)
	// Keys spread the messages over the partitions of a partitioned broker,
	// where members of a group compete for partitions.
	for i, m := range msgs {
		m.Key = fmt.Sprintf("k%d", i%16)
	}
	publishSpread(t, s.open(t), dst, msgs, 5, 5*time.Millisecond)
	got := waitForIDs(t, ids(msgs), a, b)

	checkExactlyOnce(t, "the group", msgs, append(got[0], got[1]...))
	t.Logf("member A received %d, member B %d", len(got[0]), len(got[1]))
	if len(got[0]) == 0 || len(got[1]) == 0 {
		t.Errorf("one member received every message (A %d, B %d): members of a group must compete",
			len(got[0]), len(got[1]))
	}
}

// testGroupFanOut checks that two groups each receive every message.
func (s *suite) testGroupFanOut(t *testing.T) {
	s.requireCaps(t, "ConsumerGroups")
	p := s.groupPattern(t)
	dst := dest(p, "fanout")
	a := startConsumer(t, subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()}), 10)
	b := startConsumer(t, subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()}), 10)

	msgs := newMessages("fanout", 50)
	publishSpread(t, s.open(t), dst, msgs, 10, 0)
	waitForEach(t, ids(msgs), a, b)
	checkExactlyOnce(t, "group A", msgs, a.deliveries())
	checkExactlyOnce(t, "group B", msgs, b.deliveries())
}

// testPrivateSubscriptions checks that two subscriptions with no group, on
// two connections, each receive every message.
func (s *suite) testPrivateSubscriptions(t *testing.T) {
	dst := dest(s.anyPattern(t), "private")
	a := startConsumer(t, subscribe(t, s.open(t), dst, driver.SubscribeOptions{}), 10)
	b := startConsumer(t, subscribe(t, s.open(t), dst, driver.SubscribeOptions{}), 10)

	msgs := newMessages("private", 50)
	publishSpread(t, s.open(t), dst, msgs, 10, 0)
	waitForEach(t, ids(msgs), a, b)
	checkExactlyOnce(t, "subscriber A", msgs, a.deliveries())
	checkExactlyOnce(t, "subscriber B", msgs, b.deliveries())
}

// testDeclareGroup checks driver.GroupDeclarer: a durable group declared
// before its first member keeps what is published meanwhile.
func (s *suite) testDeclareGroup(t *testing.T) {
	if !s.implementsGD {
		t.Skip("driver does not implement driver.GroupDeclarer")
	}
	d := s.open(t)
	gd := d.(driver.GroupDeclarer)
	dst := dest(s.groupPattern(t), "declare")
	opts := driver.SubscribeOptions{Group: "dtgroup" + unique(), Durable: true}
	if !s.caps.Durable {
		err := gd.DeclareGroup(timeout(t, opTimeout), dst, opts)
		if !errors.Is(err, driver.ErrUnsupported) {
			t.Errorf("DeclareGroup on a driver that does not claim Durable: %v, want an error matching driver.ErrUnsupported", err)
		}
		return
	}
	if err := gd.DeclareGroup(timeout(t, opTimeout), dst, opts); err != nil {
		t.Fatalf("DeclareGroup(%s, %+v): %v", dst, opts, err)
	}
	pub := s.open(t)
	msgs := newMessages("declared", 10)
	publish(t, pub, dst, msgs[:5]...)
	// Declaring a group that exists changes nothing.
	if err := gd.DeclareGroup(timeout(t, opTimeout), dst, opts); err != nil {
		t.Fatalf("DeclareGroup(%s, %+v) a second time: %v", dst, opts, err)
	}
	publish(t, pub, dst, msgs[5:]...)

	sub := subscribe(t, s.open(t), dst, opts)
	got := receiveAndAck(t, sub, len(msgs), 10)
	expectNone(t, sub, quietWindow, "every message was received and acked")
	checkExactlyOnce(t, "the declared group's first member", msgs, got)
}
