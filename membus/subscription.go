package membus

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// Delivery states.
const (
	inFlight uint8 = iota
	settled
	handedBack // returned by a closing or crashing subscription
)

// tracked is one delivery in flight. The driver.Delivery lives inside it, so
// a delivery costs one allocation, and its Handle points back to it.
type tracked struct {
	d   driver.Delivery
	sub *subscription
	e   entry
	// deadline is when a broker would redeliver the message if the
	// subscription's process died (see Driver.Crash).
	deadline int64

	// Guarded by sub.q.mu.
	state      uint8
	prev, next *tracked
}

// subscription is one member of a queue.
type subscription struct {
	conn        *Driver
	q           *queue
	dest        string
	ackWait     int64
	maxInFlight int
	done        chan struct{} // closed by close
	room        chan struct{} // token: a settlement made room under maxInFlight

	// Guarded by q.mu: the deliveries in flight, oldest first.
	head, tail *tracked
	inFlight   int
	closed     bool
}

var _ driver.Subscription = (*subscription)(nil)

func (s *subscription) link(t *tracked) {
	t.prev = s.tail
	if s.tail != nil {
		s.tail.next = t
	} else {
		s.head = t
	}
	s.tail = t
	s.inFlight++
}

func (s *subscription) unlink(t *tracked) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		s.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		s.tail = t.prev
	}
	t.prev, t.next = nil, nil
	s.inFlight--
}

// handBack returns the n oldest deliveries to the front of the queue in
// their order, under q.mu.
func (s *subscription) handBack(n int) {
	t := s.head
	for range n - 1 {
		t = t.next
	}
	for ; n > 0; n-- {
		prev := t.prev
		s.unlink(t)
		t.state = handedBack
		s.q.ring.pushFront(t.e)
		t = prev
	}
}

// abandon schedules every delivery in flight to return to the queue when its
// deadline passes, as a broker treats a consumer that died, under q.mu.
// Scheduling the newest first keeps equal deadlines in delivery order.
func (s *subscription) abandon() {
	for t := s.tail; t != nil; t = s.tail {
		s.unlink(t)
		t.state = handedBack
		s.q.delay(t.e, t.deadline)
	}
}

// Receive returns 1..maxN deliveries (maxN below 1 counts as 1).
func (s *subscription) Receive(ctx context.Context, maxN int) ([]*driver.Delivery, error) {
	maxN = max(maxN, 1)
	q := s.q
	for {
		q.mu.Lock()
		err := ctx.Err()
		if s.closed {
			err = driver.ErrClosed
		}
		n := min(maxN, q.ring.n)
		full := false
		if s.maxInFlight > 0 && n > s.maxInFlight-s.inFlight {
			n = max(s.maxInFlight-s.inFlight, 0)
			full = n == 0
		}
		var out []*driver.Delivery
		if err == nil && n > 0 {
			out = s.take(n)
		}
		// Whoever does not take what is queued passes the ready token on, so
		// that a wake-up it consumed is not lost to the other members.
		wakeRecv := q.ring.n > 0 && q.recvWaiting > 0
		wakePub := out != nil && q.spaceWaiting > 0
		var ready chan struct{}
		if err == nil && out == nil && !full {
			ready = q.ready
			q.recvWaiting++
		}
		q.mu.Unlock()
		if wakeRecv {
			signal(q.ready)
		}
		if wakePub {
			signal(q.space)
		}
		if err != nil {
			return nil, fmt.Errorf("membus: receive from %q: %w", s.dest, err)
		}
		if out != nil {
			return out, nil
		}
		select {
		case <-ready:
		case <-s.room:
		case <-s.done:
		case <-ctx.Done():
		}
		if ready != nil {
			q.mu.Lock()
			q.recvWaiting--
			q.mu.Unlock()
		}
	}
}

// take moves n entries from the queue into flight, under q.mu.
func (s *subscription) take(n int) []*driver.Delivery {
	q := s.q
	deadline := q.b.now() + s.ackWait
	out := make([]*driver.Delivery, n)
	// One allocation for the batch's records, not one per delivery.
	ts := make([]tracked, n)
	for i := range out {
		e := q.ring.popFront()
		e.attempt++
		t := &ts[i]
		*t = tracked{sub: s, e: e, deadline: deadline}
		t.d = driver.Delivery{Message: e.msg, Attempt: e.attempt, Handle: t}
		s.link(t)
		out[i] = &t.d
	}
	return out
}

// Ack settles ds for good.
func (s *subscription) Ack(ctx context.Context, ds []*driver.Delivery) error {
	return s.settle("ack", ds, func(*tracked) {})
}

// Term settles ds for good without processing.
func (s *subscription) Term(ctx context.Context, ds []*driver.Delivery) error {
	return s.settle("term", ds, func(*tracked) {})
}

// Nack returns ds to the front of the queue, after delay when positive.
func (s *subscription) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	q := s.q
	if delay <= 0 {
		return s.settle("nack", ds, func(t *tracked) { q.ring.pushFront(t.e) })
	}
	due := q.b.now() + int64(delay)
	return s.settle("nack", ds, func(t *tracked) { q.delay(t.e, due) })
}

// settle takes each valid delivery of ds out of flight and passes it to fn,
// last first, so that requeueing at the front keeps the batch's order.
func (s *subscription) settle(op string, ds []*driver.Delivery, fn func(*tracked)) error {
	q := s.q
	var bad int
	var first error
	q.mu.Lock()
	if s.closed {
		q.mu.Unlock()
		return fmt.Errorf("membus: %s on %q: %w", op, s.dest, driver.ErrClosed)
	}
	settledAny := false
	for i := len(ds) - 1; i >= 0; i-- {
		var t *tracked
		if ds[i] != nil {
			t, _ = ds[i].Handle.(*tracked)
		}
		var err error
		switch {
		case t == nil || t.sub != s:
			err = ErrForeignDelivery
		case t.state != inFlight:
			err = ErrNotInFlight
		}
		if err != nil {
			bad++
			first = err
			continue
		}
		s.unlink(t)
		t.state = settled
		fn(t)
		settledAny = true
	}
	wakeRecv := settledAny && q.ring.n > 0 && q.recvWaiting > 0
	q.mu.Unlock()
	if wakeRecv {
		signal(q.ready)
	}
	if settledAny && s.maxInFlight > 0 {
		signal(s.room)
	}
	if first != nil {
		return fmt.Errorf("membus: %s on %q: %d of %d deliveries refused: %w", op, s.dest, bad, len(ds), first)
	}
	return nil
}

// Close stops the subscription and hands its unsettled deliveries back to
// its group at once. It is idempotent.
func (s *subscription) Close(ctx context.Context) error {
	s.close(false)
	c := s.conn
	c.mu.Lock()
	if c.subs != nil {
		delete(c.subs, s)
	}
	c.mu.Unlock()
	return nil
}

// close stops the subscription. Its deliveries in flight go back to the
// queue at once, or at their deadline when the subscription crashed.
func (s *subscription) close(crash bool) {
	q := s.q
	b := q.b
	b.mu.Lock()
	q.mu.Lock()
	if s.closed {
		q.mu.Unlock()
		b.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	for i, m := range q.mem {
		if m == s {
			q.mem = slices.Delete(q.mem, i, i+1)
			break
		}
	}
	q.members.Store(int32(len(q.mem)))
	if crash {
		s.abandon()
	} else {
		s.handBack(s.inFlight)
	}
	var stop, loopDone chan struct{}
	if len(q.mem) == 0 {
		stop, loopDone = q.loopStop, q.loopDone
		q.loopStop, q.loopDone = nil, nil
		q.timerAt = 0
		if !q.durable {
			q.removed = true
			close(q.gone)
			b.remove(s.dest, q)
			q.ring = ring{}
			q.delayed = nil
		}
	}
	wakeRecv := q.ring.n > 0 && q.recvWaiting > 0
	q.mu.Unlock()
	b.mu.Unlock()
	if wakeRecv {
		signal(q.ready)
	}
	if stop != nil {
		close(stop)
		<-loopDone
	}
}
