package rabbitbus

import (
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// acker sends the settlements of one consumer channel. The broker numbers a
// channel's deliveries 1, 2, 3... and a basic.ack with multiple set settles
// every unsettled delivery up to its tag, so when the deliveries acked
// together are, with those settled before, every delivery up to the highest
// of them, the acker sends that one frame instead of one per delivery. A
// delivery still buffered, handed out or in a handler keeps the ones after
// it from being covered: they are acked one by one.
//
// Every frame is sent under mu, so a multiple ack never overtakes the
// separate settlement of a delivery it covers (the broker would close the
// channel for an unknown delivery tag).
type acker struct {
	ch settler

	mu    sync.Mutex
	open  map[uint64]struct{} // received and not settled: at most the prefetch
	floor uint64              // no delivery below it is open
	next  uint64              // one past the highest tag received
}

// settler is the part of *amqp.Channel that settles deliveries.
type settler interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
}

var _ settler = (*amqp.Channel)(nil)

func newAcker(ch settler) *acker {
	return &acker{ch: ch, open: map[uint64]struct{}{}, floor: 1, next: 1}
}

// received records a delivery taken from the channel. Receive calls it in
// the broker's order, before it takes the next delivery: every tag below
// next has been recorded, so the floor never passes a delivery that is not
// settled.
func (a *acker) received(tag uint64) {
	a.mu.Lock()
	a.open[tag] = struct{}{}
	a.next = tag + 1
	a.mu.Unlock()
}

// settle marks tags settled and moves the floor up to the lowest open tag.
// Called with mu held.
func (a *acker) settle(tags []uint64) {
	for _, t := range tags {
		delete(a.open, t)
	}
	for a.floor < a.next {
		if _, open := a.open[a.floor]; open {
			break
		}
		a.floor++
	}
}

// ack acknowledges tags (which it sorts) in as few frames as the open
// deliveries allow.
func (a *acker) ack(tags []uint64) error {
	slices.Sort(tags)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settle(tags)
	// Tags below the floor are covered by one frame for the highest of them.
	covered, _ := slices.BinarySearch(tags, a.floor)
	if covered > 1 {
		if err := a.ch.Ack(tags[covered-1], true); err != nil {
			return err
		}
		tags = tags[covered:]
	}
	for _, t := range tags {
		if err := a.ch.Ack(t, false); err != nil {
			return err
		}
	}
	return nil
}

// requeue gives a delivery back to its queue (basic.nack with requeue).
func (a *acker) requeue(tag uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settle([]uint64{tag})
	return a.ch.Nack(tag, false, true)
}
