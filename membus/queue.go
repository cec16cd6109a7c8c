package membus

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// entry is one queued message.
type entry struct {
	msg *driver.Message
	// reply is the requester's slot when the message is a request.
	reply chan *driver.Message
	// attempt counts the deliveries so far.
	attempt int
}

// ring is a FIFO of entries that grows by doubling.
type ring struct {
	buf  []entry
	head int
	n    int
}

func (r *ring) grow() {
	size := 2 * len(r.buf)
	if size < 16 {
		size = 16
	}
	buf := make([]entry, size)
	k := copy(buf, r.buf[r.head:])
	copy(buf[k:], r.buf[:r.head])
	r.buf, r.head = buf, 0
}

func (r *ring) pushBack(e entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) pushFront(e entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head + len(r.buf) - 1) % len(r.buf)
	r.buf[r.head] = e
	r.n++
}

func (r *ring) popFront() entry {
	e := r.buf[r.head]
	r.buf[r.head] = entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return e
}

// delayedEntry waits in a queue for its due time after a Nack with delay, or
// for the deadline of a delivery whose subscription crashed.
type delayedEntry struct {
	due int64
	e   entry
}

// queue is the FIFO of a private subscription or of a group, with the
// in-flight deliveries of its members.
type queue struct {
	b     *broker
	group string // "" for a private queue

	// ready holds a token when entries may be available to a waiting
	// receiver; space when room may be available to a waiting publisher;
	// kick when the timer goroutine must recompute its deadline.
	ready chan struct{}
	space chan struct{}
	kick  chan struct{}
	// gone is closed when the queue is removed from its destination.
	gone chan struct{}

	members atomic.Int32 // len(mem), readable without mu

	mu           sync.Mutex
	ring         ring
	delayed      []delayedEntry // by due time
	mem          []*subscription
	durable      bool
	removed      bool
	recvWaiting  int
	spaceWaiting int
	// timerAt is the time the timer goroutine will wake at, 0 when it has
	// no deadline: an event due earlier must kick it.
	timerAt  int64
	loopStop chan struct{}
	loopDone chan struct{}
}

func newQueue(b *broker, group string) *queue {
	return &queue{
		b:     b,
		group: group,
		ready: make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		kick:  make(chan struct{}, 1),
		gone:  make(chan struct{}),
	}
}

// signal leaves a token in c unless one is there already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push copies msgs to the back of q, waiting while q is full. A queue removed
// meanwhile swallows the rest, as a destination without queues does.
func (q *queue) push(ctx context.Context, connDone <-chan struct{}, msgs []*driver.Message, reply chan *driver.Message) error {
	// Copies are made outside the lock, a chunk at a time.
	var chunk [32]entry
	for len(msgs) > 0 {
		n := min(len(msgs), len(chunk))
		for i, m := range msgs[:n] {
			chunk[i] = entry{msg: m.Clone(), reply: reply}
		}
		msgs = msgs[n:]
		pending := chunk[:n]
		for len(pending) > 0 {
			q.mu.Lock()
			if q.removed {
				q.mu.Unlock()
				return nil
			}
			if room := q.b.capacity - q.ring.n; room > 0 {
				k := min(room, len(pending))
				for _, e := range pending[:k] {
					q.ring.pushBack(e)
				}
				pending = pending[k:]
				wakeRecv := q.recvWaiting > 0
				wakePub := q.spaceWaiting > 0 && q.ring.n < q.b.capacity
				q.mu.Unlock()
				if wakeRecv {
					signal(q.ready)
				}
				if wakePub {
					signal(q.space)
				}
				continue
			}
			q.spaceWaiting++
			q.mu.Unlock()
			var err error
			select {
			case <-q.space:
			case <-q.gone:
			case <-connDone:
				err = driver.ErrClosed
			case <-ctx.Done():
				err = ctx.Err()
			}
			q.mu.Lock()
			q.spaceWaiting--
			q.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// delay schedules e to return to the front of q at due, under q.mu. Entries
// with equal due times keep the order in which they are scheduled when
// scheduled last first, as settle does.
func (q *queue) delay(e entry, due int64) {
	i := sort.Search(len(q.delayed), func(i int) bool { return q.delayed[i].due >= due })
	q.delayed = append(q.delayed, delayedEntry{})
	copy(q.delayed[i+1:], q.delayed[i:])
	q.delayed[i] = delayedEntry{due: due, e: e}
	q.schedule(due)
}

// schedule makes sure the timer goroutine wakes by t, under q.mu.
func (q *queue) schedule(t int64) {
	if q.loopStop != nil && (q.timerAt == 0 || t < q.timerAt) {
		q.timerAt = t
		signal(q.kick)
	}
}

// addMember adds s, starting the timer goroutine for the first member,
// under q.mu.
func (q *queue) addMember(s *subscription) {
	q.mem = append(q.mem, s)
	q.members.Store(int32(len(q.mem)))
	if q.loopStop == nil {
		q.loopStop = make(chan struct{})
		q.loopDone = make(chan struct{})
		q.timerAt = 0
		go q.timerLoop(q.loopStop, q.loopDone)
	}
}

// timerLoop hands back due delayed entries while q has members.
func (q *queue) timerLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		now := q.b.now()
		next, moved := q.maintain(now)
		q.timerAt = next
		wake := moved && q.recvWaiting > 0
		q.mu.Unlock()
		if wake {
			signal(q.ready)
		}
		if next > 0 {
			timer.Reset(time.Duration(next - now))
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-q.kick:
		case <-stop:
			return
		}
	}
}

// maintain moves due delayed entries to the front of q, under q.mu. It
// returns the next time something falls due (0: nothing pending) and whether
// entries were moved.
func (q *queue) maintain(now int64) (next int64, moved bool) {
	due := 0
	for due < len(q.delayed) && q.delayed[due].due <= now {
		due++
	}
	if due > 0 {
		for i := due - 1; i >= 0; i-- {
			q.ring.pushFront(q.delayed[i].e)
		}
		k := copy(q.delayed, q.delayed[due:])
		clear(q.delayed[k:])
		q.delayed = q.delayed[:k]
		moved = true
	}
	if len(q.delayed) > 0 {
		next = q.delayed[0].due
	}
	return next, moved
}
