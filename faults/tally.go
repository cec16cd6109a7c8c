package faults

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Tally counts the messages of one fault test: which were published and
// confirmed by the broker, which were delivered and how often, and when the
// stream flowed again after the fault. All methods are safe for concurrent
// use.
type Tally struct {
	mu          sync.Mutex
	confirmed   map[string]time.Time // id → when its publish was confirmed
	delivered   map[string]int
	deliveries  int
	faultAt     time.Time
	recoveredAt time.Time
}

// NewTally returns an empty tally.
func NewTally() *Tally {
	return &Tally{confirmed: map[string]time.Time{}, delivered: map[string]int{}}
}

// Confirmed records that the broker confirmed the publish of id.
func (t *Tally) Confirmed(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.confirmed[id]; !ok {
		t.confirmed[id] = time.Now()
	}
}

// Delivered records one delivery of id to a handler.
func (t *Tally) Delivered(id string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.delivered[id]++
	t.deliveries++
	if at, ok := t.confirmed[id]; ok && !t.faultAt.IsZero() && t.recoveredAt.IsZero() && at.After(t.faultAt) {
		t.recoveredAt = now
	}
}

// Fault records the moment of the fault. Recovery is measured from it to
// the first delivery of a message whose publish was confirmed after it.
func (t *Tally) Fault() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faultAt = time.Now()
	t.recoveredAt = time.Time{}
}

// Lost lists, sorted, the ids confirmed and not delivered (yet).
func (t *Tally) Lost() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lost []string
	for id := range t.confirmed {
		if t.delivered[id] == 0 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	return lost
}

// AwaitDelivered waits until every confirmed message was delivered, or ctx
// ends; it returns what is still missing.
func (t *Tally) AwaitDelivered(ctx context.Context) []string {
	for {
		lost := t.Lost()
		if len(lost) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return lost
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Report is a tally's figures.
type Report struct {
	// Confirmed counts the distinct messages whose publish the broker
	// confirmed; Delivered the distinct messages delivered; Deliveries every
	// delivery. Lost is confirmed and never delivered: it must be 0.
	Confirmed, Delivered, Deliveries, Lost int
	// Duplicated counts deliveries beyond the first of a message.
	Duplicated int
	// Recovery runs from the fault to the first delivery of a message
	// confirmed after it; zero when there was no fault or no such delivery.
	Recovery time.Duration
}

// Report returns the figures so far.
func (t *Tally) Report() Report {
	lost := len(t.Lost())
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Report{Confirmed: len(t.confirmed), Delivered: len(t.delivered), Deliveries: t.deliveries, Lost: lost}
	r.Duplicated = r.Deliveries - r.Delivered
	if !t.recoveredAt.IsZero() {
		r.Recovery = t.recoveredAt.Sub(t.faultAt)
	}
	return r
}

func (r Report) String() string {
	return fmt.Sprintf("published and acknowledged %d, delivered %d (%d deliveries), lost %d, duplicated %d, recovery %v",
		r.Confirmed, r.Delivered, r.Deliveries, r.Lost, r.Duplicated, r.Recovery.Round(time.Millisecond))
}
