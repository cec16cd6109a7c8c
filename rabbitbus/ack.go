package rabbitbus

import (
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ackDelay is how long an ack may wait for others to share its frame.
const ackDelay = 2 * time.Millisecond

// acker sends the settlements of one consumer channel. The broker numbers a
// channel's deliveries 1, 2, 3... and a basic.ack with multiple set settles
// every unsettled delivery up to its tag, which must be one the broker still
// holds.
//
// Acks are coalesced, as Nagle's algorithm coalesces small writes: an ack
// goes at once when no frame went within ackDelay; otherwise it waits until
// ackDelay after the last frame (or until a quarter of the prefetch is
// waiting), and the acks waiting then go in as few frames as the open
// deliveries allow: one basic.ack with multiple set for those below the
// floor (the lowest delivery not settled), one frame each for the rest. A
// consumer kept busy sends a frame per ackDelay instead of one (a system
// call here, a command for the broker) per Ack call; an idle one acks at
// once. Requeues (basic.nack) go at once.
//
// Every frame is sent under mu, so a multiple ack never overtakes the
// separate settlement of a delivery it covers (the broker would close the
// channel for an unknown delivery tag).
type acker struct {
	ch      settler
	delay   time.Duration // 0: every ack is sent at once
	flushAt int           // acks waiting that are sent without waiting longer
	onErr   func(error)   // a coalesced frame failed to be sent

	mu     sync.Mutex
	open   map[uint64]struct{} // received and not settled: at most the prefetch
	unsent []uint64            // acked, no frame sent yet
	floor  uint64              // no delivery below it is open
	next   uint64              // one past the highest tag received
	sent   time.Time           // when the last frame went
	timer  *time.Timer
	armed  bool
	done   bool
}

// settler is the part of *amqp.Channel that settles deliveries.
type settler interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	IsClosed() bool
}

var _ settler = (*amqp.Channel)(nil)

// newAcker returns the acker of a channel with the given prefetch; acks
// wait up to delay to be coalesced (none when delay is 0), and onErr hears
// of a coalesced frame that could not be sent.
func newAcker(ch settler, prefetch int, delay time.Duration, onErr func(error)) *acker {
	a := &acker{ch: ch, delay: delay, flushAt: max(1, prefetch/4), onErr: onErr,
		open: map[uint64]struct{}{}, floor: 1, next: 1}
	if delay > 0 {
		a.timer = time.AfterFunc(time.Hour, a.timed)
		a.timer.Stop()
	}
	return a
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

// ack acknowledges tags: at once when the acker does not coalesce or
// enough acks are waiting, else within the delay. An error means that
// the channel is gone: the broker redelivers what it had not been told of.
func (a *acker) ack(tags []uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch.IsClosed() {
		return amqp.ErrClosed
	}
	a.settle(tags)
	a.unsent = append(a.unsent, tags...)
	if a.armed && len(a.unsent) < a.flushAt {
		return nil // the timer sends them
	}
	now := time.Now()
	if wait := a.delay - now.Sub(a.sent); a.timer != nil && !a.done && !a.armed && wait > 0 && len(a.unsent) < a.flushAt {
		a.armed = true
		a.timer.Reset(wait)
		return nil
	}
	a.sent = now
	return a.send()
}

// send sends the waiting acks in as few frames as the open deliveries
// allow. Called with mu held.
func (a *acker) send() error {
	tags := a.unsent
	a.unsent = a.unsent[:0]
	if len(tags) == 0 {
		return nil
	}
	slices.Sort(tags)
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

// timed sends what waited for the delay.
func (a *acker) timed() {
	a.mu.Lock()
	a.armed = false
	var err error
	if !a.done {
		a.sent = time.Now()
		err = a.send()
	}
	a.mu.Unlock()
	if err != nil && a.onErr != nil {
		a.onErr(err)
	}
}

// flush sends the acks waiting, and from then on sends every ack at once:
// the subscription closes or its channel was replaced.
func (a *acker) flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done = true
	if a.timer != nil {
		a.timer.Stop()
		a.armed = false
	}
	if a.ch.IsClosed() {
		a.unsent = a.unsent[:0]
		return nil
	}
	return a.send()
}

// requeue gives a delivery back to its queue (basic.nack with requeue), at
// once.
func (a *acker) requeue(tag uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settle([]uint64{tag})
	return a.ch.Nack(tag, false, true)
}
