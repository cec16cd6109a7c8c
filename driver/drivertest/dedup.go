package drivertest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

// testDeduplication checks that de-duplication, where a broker has it, goes
// by (source, id, destination) and never by id alone, and that the driver's
// claim (Harness.Deduplicates) is true either way. A driver that
// de-duplicates only where asked (driver.DeduplicatedPublisher) is checked
// through PublishDeduplicated, and its Publish must store a repeat again.
func (s *suite) testDeduplication(t *testing.T) {
	t.Run("DistinctSourcesAndDestinations", s.testSameIDElsewhere)
	t.Run("Republish", func(t *testing.T) { s.testRepublish(t, s.h.Deduplicates, true) })
	if _, ok := s.open(t).(driver.DeduplicatedPublisher); ok {
		t.Run("RepublishWithoutDeduplication", func(t *testing.T) { s.testRepublish(t, false, false) })
	}
}

// publishDedup publishes msgs through d's de-duplicated publish when it
// has one, else through Publish.
func publishDedup(ctx context.Context, d driver.Driver, dst driver.Destination, msgs []*driver.Message) error {
	if dp, ok := d.(driver.DeduplicatedPublisher); ok {
		return dp.PublishDeduplicated(ctx, dst, msgs)
	}
	return d.Publish(ctx, dst, msgs)
}

// testSameIDElsewhere publishes one id from two sources to one destination,
// and from one source to two destinations: every publish succeeds and is
// delivered.
func (s *suite) testSameIDElsewhere(t *testing.T) {
	p := s.anyPattern(t)
	one, two := dest(p, "sameid"), dest(p, "sameid")
	subOne := subscribe(t, s.open(t), one, driver.SubscribeOptions{Group: s.group()})
	subTwo := subscribe(t, s.open(t), two, driver.SubscribeOptions{Group: s.group()})

	id := "same-id-" + unique()
	fromA := messageWithID(id)
	fromA.Source = "/drivertest/source-a"
	fromB := messageWithID(id)
	fromB.Source = "/drivertest/source-b"
	fromB.Data = []byte("data of " + id + " from source b")
	pub := s.open(t)
	for _, p := range []struct {
		dst driver.Destination
		m   *driver.Message
	}{{one, fromA}, {two, fromA}, {one, fromB}} {
		if err := publishDedup(timeout(t, opTimeout), pub, p.dst, []*driver.Message{p.m.Clone()}); err != nil {
			t.Errorf("Publish of id %q from %s to %s: %v; the same id from another source or to another destination is another message",
				p.m.ID, p.m.Source, p.dst, err)
		}
	}

	got := receiveAndAck(t, subOne, 2, 10)
	slices.SortFunc(got, func(a, b *driver.Delivery) int { return strings.Compare(a.Message.Source, b.Message.Source) })
	checkMessage(t, fromA, got[0].Message)
	checkMessage(t, fromB, got[1].Message)
	checkMessage(t, fromA, receiveAndAck(t, subTwo, 1, 10)[0].Message)
	expectNone(t, subOne, quietWindow, "each source published the id once to this destination")
	expectNone(t, subTwo, quietWindow, "the id was published once to this destination")
}

// testRepublish publishes the same message twice to one destination
// (through the de-duplicated publish when dedupPath is set, else through
// Publish): a broker that de-duplicates stores it once and says so with
// ErrDuplicate, also for one message of a batch whose others it stores; one
// that does not delivers it twice.
func (s *suite) testRepublish(t *testing.T, dedups, dedupPath bool) {
	dst := dest(s.anyPattern(t), "republish")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	pub := s.open(t)
	send := pub.Publish
	if dedupPath {
		send = func(ctx context.Context, dst driver.Destination, msgs []*driver.Message) error {
			return publishDedup(ctx, pub, dst, msgs)
		}
	}
	m := newMessage("republish")
	if err := send(timeout(t, opTimeout), dst, []*driver.Message{m.Clone()}); err != nil {
		t.Fatalf("Publish of %q: %v", m.ID, err)
	}
	err := send(timeout(t, opTimeout), dst, []*driver.Message{m.Clone()})

	if !dedups {
		if err != nil {
			t.Fatalf("second Publish of %q: %v; the broker does not de-duplicate on this path, so it must be stored again", m.ID, err)
		}
		for _, d := range receiveAndAck(t, sub, 2, 10) {
			checkMessage(t, m, d.Message)
		}
		expectNone(t, sub, quietWindow, "the message was published twice and received twice")
		return
	}

	if !errors.Is(err, driver.ErrDuplicate) {
		t.Errorf("second Publish of %q: %v, want an error matching driver.ErrDuplicate (Harness.Deduplicates is set)", m.ID, err)
	}
	fresh := newMessage("after-duplicate")
	err = send(timeout(t, opTimeout), dst, []*driver.Message{m.Clone(), fresh})
	if !errors.Is(err, driver.ErrDuplicate) {
		t.Errorf("Publish of a batch holding a duplicate of %q: %v, want an error matching driver.ErrDuplicate", m.ID, err)
	}
	got := receiveAndAck(t, sub, 2, 10)
	expectNone(t, sub, quietWindow, "the message was published three times, and stored once")
	checkExactlyOnce(t, "the subscriber", []*driver.Message{m, fresh}, got)
}
