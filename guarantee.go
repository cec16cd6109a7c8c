package eventbus

import (
	"context"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// DeliveryGuarantee is what a route promises about the messages it places
// (Route.Delivery). Start refuses a guarantee the route's backend cannot
// give, with ErrCapability.
type DeliveryGuarantee int

const (
	// AtLeastOnce, the default: a publish is reported done only once the
	// backend confirmed it, and a consumer's message is redelivered until
	// its handler succeeds (or it is dead-lettered). A message may arrive
	// twice; it is not lost. Publishes ask for no de-duplication where it
	// costs the backend every message (driver.DeduplicatedPublisher:
	// JetStream's Nats-Msg-Id), so one published again — by its caller, an
	// outbox relay, or the driver after a lost confirmation — may be stored
	// twice; consumers that must not see it twice de-duplicate
	// (outbox.Inbox, middleware.Dedup). Backends that de-duplicate every
	// publish (SQS FIFO) still do.
	AtLeastOnce DeliveryGuarantee = iota

	// AtMostOnce: a Publisher writes the route's messages without waiting
	// for the backend's confirmation when the driver can
	// (driver.UnconfirmedPublisher: core NATS, JetStream, membus), which is
	// what a core NATS or Redis Pub/Sub user expects; a message may be lost
	// and the publisher does not learn it. Elsewhere, and for the Bus's own
	// publish methods, the publish stays confirmed (a stronger promise).
	// Consumption is unchanged: set WithRetry(RetryPolicy{MaxAttempts: 1})
	// on a subscription that must not see a message twice after a failure.
	AtMostOnce

	// ExactlyOnce: the backend de-duplicates publishes by (source, id,
	// destination) within its window (driver.Deduplicator; JetStream's
	// Duplicates; the bus publishes through driver.DeduplicatedPublisher
	// where the driver has it), so a message published again under the
	// same ID after an error or a lost confirmation is stored once, and
	// the publish that repeats it fails with ErrDuplicate; consumers make the
	// processing exactly once by running their handlers through an inbox
	// (outbox.Inbox.Handler), which records (source, id) with the handler's
	// writes. Only events, commands and streams can be exactly-once.
	ExactlyOnce
)

func (g DeliveryGuarantee) String() string {
	switch g {
	case AtLeastOnce:
		return "at-least-once"
	case AtMostOnce:
		return "at-most-once"
	case ExactlyOnce:
		return "exactly-once"
	}
	return fmt.Sprintf("DeliveryGuarantee(%d)", int(g))
}

// deliveryOf returns the guarantee of dest: that of the first route without
// a content filter that applies to it, else AtLeastOnce.
func deliveryOf(rt *router, dest driver.Destination) DeliveryGuarantee {
	rel := strings.TrimPrefix(dest.Name, dest.Pattern.Prefix()+".")
	for _, r := range rt.routes {
		if r.Filter.IsZero() && routeApplies(r, dest, rel) {
			return r.Delivery
		}
	}
	return AtLeastOnce
}

// publishTo hands msgs to be's driver: through its de-duplicated publish
// when a route makes dest exactly-once, else through Publish, which a
// driver whose de-duplication costs every message (JetStream) leaves
// without it.
func (b *Bus) publishTo(ctx context.Context, be *backend, dest driver.Destination, msgs []*Message) error {
	if rt := b.routes.Load(); rt != nil && rt.exactlyOnce && rt.deduplicates(dest) {
		return publishDeduplicated(ctx, be.drv, dest, msgs)
	}
	return be.drv.Publish(ctx, dest, msgs)
}

// publishDeduplicated publishes msgs through drv's de-duplicated publish
// when it has one, else through Publish (a driver that de-duplicates every
// publish, or none).
func publishDeduplicated(ctx context.Context, drv driver.Driver, dest driver.Destination, msgs []*Message) error {
	if dp, ok := drv.(driver.DeduplicatedPublisher); ok {
		return dp.PublishDeduplicated(ctx, dest, msgs)
	}
	return drv.Publish(ctx, dest, msgs)
}

// deduplicates reports whether dest is exactly-once, from a cache of the
// destinations already seen.
func (rt *router) deduplicates(dest driver.Destination) bool {
	if v, ok := rt.dedup.Load(dest.Name); ok {
		return v.(bool)
	}
	exactly := deliveryOf(rt, dest) == ExactlyOnce
	rt.dedup.Store(dest.Name, exactly)
	return exactly
}

// checkDelivery reports the routes whose guarantee their backend cannot
// give.
func checkDelivery(rt *router) []error {
	var problems []error
	for _, r := range rt.routes {
		switch r.Delivery {
		case AtLeastOnce, AtMostOnce:
			continue
		case ExactlyOnce:
		default:
			problems = append(problems, fmt.Errorf("%s: unknown delivery guarantee %d", r, int(r.Delivery)))
			continue
		}
		be := rt.byName[r.Backend]
		if be == nil {
			continue // reported by newRouter
		}
		patterns := []Pattern{r.Pattern}
		switch r.Pattern {
		case 0:
			patterns = []Pattern{driver.Event, driver.Command, driver.Stream}
		case driver.Query, driver.Broadcast:
			problems = append(problems, fmt.Errorf("%s: %w: %s cannot be exactly-once: nothing is stored", r, ErrCapability, r.Pattern))
			continue
		}
		dd, _ := be.drv.(driver.Deduplicator)
		for _, p := range patterns {
			if !be.caps.Serves(p) {
				continue
			}
			if dd == nil || dd.DeduplicationWindow(p) <= 0 {
				problems = append(problems, fmt.Errorf("%s: %w: exactly-once needs a backend that de-duplicates %s publishes; %q (%s) does not",
					r, ErrCapability, p, be.name, be.caps.Name))
			}
		}
	}
	return problems
}
