package eventbus

import (
	"context"
	"errors"

	"github.com/marty-msf/eventbus/driver"
)

// BackendHealth is the health of one backend, from Bus.Health.
type BackendHealth struct {
	Backend string
	// Live is false once the backend's connection is closed or lost for
	// good: restarting the process is the remedy.
	Live bool
	// Ready is true while the backend serves traffic now.
	Ready bool
	// Err says why the backend is not ready (nil when it is).
	Err error
}

// Health checks every backend, in registration order. A driver that
// implements driver.Pinger is pinged (within ctx); one that does not is
// reported live and ready while the bus is open. A bus that is not started
// is live and not ready; a closed bus is neither.
func (b *Bus) Health(ctx context.Context) []BackendHealth {
	b.mu.Lock()
	backends := b.backends
	started := b.started
	b.mu.Unlock()
	out := make([]BackendHealth, len(backends))
	for i, be := range backends {
		h := BackendHealth{Backend: be.name, Live: true, Ready: true}
		switch {
		case b.closed.Load():
			h.Live, h.Ready, h.Err = false, false, ErrClosed
		case !started:
			h.Ready, h.Err = false, ErrNotStarted
		}
		if p, ok := be.drv.(driver.Pinger); ok && h.Ready {
			if err := p.Ping(ctx); err != nil {
				h.Ready, h.Err = false, err
				h.Live = !errors.Is(err, driver.ErrClosed)
			}
		}
		out[i] = h
	}
	return out
}

// SubscriptionLag is the backlog of one subscription, from Bus.Lag.
type SubscriptionLag struct {
	Operation
	// Pending counts the messages waiting on the backend for the
	// subscription's group.
	Pending uint64
}

// Lag reports the backlog of every open subscription whose backend knows it
// (driver.LagReporter: JetStream, ...). Subscriptions whose backend could not
// answer within ctx are left out.
func (b *Bus) Lag(ctx context.Context) []SubscriptionLag {
	b.mu.Lock()
	var cs []*consumer
	for s := range b.subs {
		cs = append(cs, s.consumers...)
	}
	b.mu.Unlock()
	var out []SubscriptionLag
	for _, c := range cs {
		lr, ok := c.sub.(driver.LagReporter)
		if !ok || c.intake.Err() != nil {
			continue
		}
		n, err := lr.Lag(ctx)
		if err != nil {
			continue
		}
		kind := OpProcess
		switch c.kind {
		case kindBatch:
			kind = OpProcessBatch
		case kindQuery:
			kind = OpAnswer
		}
		out = append(out, SubscriptionLag{Operation: c.operation(kind), Pending: n})
	}
	return out
}
