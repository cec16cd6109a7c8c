package eventbus

import (
	"context"
	"sync"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// settleDelay bounds how long a settlement waits to be coalesced with others
// before it is sent to the broker.
const settleDelay = time.Millisecond

type settleOp uint8

const (
	opAck settleOp = iota
	opTerm
)

// settler sends a consumer's acks and terms to the broker within settleDelay
// of the handler returning, whatever the other deliveries of the batch do:
// settlements ready together go in one call. The consumer flushes at once
// when it runs out of work; a timer armed by the first pending settlement
// flushes when a handler keeps it busy. Nothing runs between settlements:
// the fast path is an append under an uncontended lock.
type settler struct {
	c     *consumer
	ctx   context.Context // survives the consumer's close, so what was handled is settled
	timer *time.Timer

	mu          sync.Mutex
	acks, terms []*driver.Delivery
	spareAcks   []*driver.Delivery // emptied slices, for the next round
	spareTerms  []*driver.Delivery
	armed       bool
	sending     sync.Mutex // held while a flush talks to the broker
}

func newSettler(c *consumer) *settler {
	s := &settler{c: c, ctx: context.WithoutCancel(c.work)}
	s.timer = time.AfterFunc(time.Hour, s.flush)
	s.timer.Stop()
	return s
}

// add queues the settlement of d.
func (s *settler) add(d *driver.Delivery, op settleOp) {
	s.mu.Lock()
	if op == opAck {
		s.acks = append(s.acks, d)
	} else {
		s.terms = append(s.terms, d)
	}
	arm := !s.armed
	s.armed = true
	s.mu.Unlock()
	if arm {
		s.timer.Reset(settleDelay)
	}
}

// flush sends what is pending.
func (s *settler) flush() {
	s.sending.Lock()
	defer s.sending.Unlock()
	s.mu.Lock()
	acks, terms := s.acks, s.terms
	s.acks, s.terms = s.spareAcks, s.spareTerms
	s.spareAcks, s.spareTerms = nil, nil
	if s.armed {
		// What the timer was armed for goes now: disarm it, so that it
		// does not run a flush of nothing later. Under mu, so that it
		// cannot disarm the timer of a settlement added after this one
		// took the pending ones.
		s.armed = false
		s.timer.Stop()
	}
	s.mu.Unlock()
	if len(acks) > 0 {
		if err := s.c.sub.Ack(s.ctx, acks); err != nil {
			s.c.bus.log.Warn("eventbus: ack failed; messages will be redelivered", "destination", s.c.dest.Name, "count", len(acks), "error", err)
		}
	}
	if len(terms) > 0 {
		if err := s.c.sub.Term(s.ctx, terms); err != nil {
			s.c.bus.log.Warn("eventbus: term failed; a duplicate may follow", "destination", s.c.dest.Name, "count", len(terms), "error", err)
		}
	}
	// The driver keeps no reference to the slices: reuse them.
	clear(acks)
	clear(terms)
	s.mu.Lock()
	s.spareAcks, s.spareTerms = acks[:0], terms[:0]
	s.mu.Unlock()
}

// stop flushes what is pending and waits for a timer flush in progress. A
// timer that fires later finds nothing to send, so nothing reaches the
// subscription after it closes.
func (s *settler) stop() {
	s.timer.Stop()
	s.flush()
}
