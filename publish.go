package eventbus

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus/driver"
)

// PublishEvent publishes m (m.Type required) to events.<type>. Every
// subscribed group receives it once. It returns nil only after the backend
// confirmed the message.
func (b *Bus) PublishEvent(ctx context.Context, m *Message) error {
	if err := checkMessage(m); err != nil {
		return fmt.Errorf("eventbus: publish event: %w", err)
	}
	return b.publish(ctx, b.destination(driver.Event, m.Type, ""), m)
}

// SendCommand sends m (m.Type required) to commands.<service>.<type>: exactly
// one instance of service handles it. It returns once the backend confirmed.
func (b *Bus) SendCommand(ctx context.Context, service string, m *Message) error {
	if err := validateToken("service", service); err != nil {
		return fmt.Errorf("eventbus: send command: %w", err)
	}
	if err := checkMessage(m); err != nil {
		return fmt.Errorf("eventbus: send command: %w", err)
	}
	return b.publish(ctx, b.destination(driver.Command, service, m.Type), m)
}

// Broadcast publishes m (m.Type required) to broadcast.<type>: every
// subscribed instance receives it; nothing is persisted for instances that are
// not running.
func (b *Bus) Broadcast(ctx context.Context, m *Message) error {
	if err := checkMessage(m); err != nil {
		return fmt.Errorf("eventbus: broadcast: %w", err)
	}
	return b.publish(ctx, b.destination(driver.Broadcast, m.Type, ""), m)
}

// PublishStream appends msgs to streams.<stream> in one batch. Messages with
// the same Key are consumed in the order published. Each message needs a Type.
func (b *Bus) PublishStream(ctx context.Context, stream string, msgs ...*Message) error {
	if err := validateType("stream", stream); err != nil {
		return fmt.Errorf("eventbus: publish stream: %w", err)
	}
	for _, m := range msgs {
		if err := checkMessage(m); err != nil {
			return fmt.Errorf("eventbus: publish stream %s: %w", stream, err)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	dest := b.destination(driver.Stream, stream, "")
	if b.screensPublish() {
		return b.publishContent(ctx, dest, msgs)
	}
	be, err := b.backendFor(dest)
	if err != nil {
		return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
	}
	for _, m := range msgs {
		b.fill(m)
	}
	if err := b.send(ctx, be, dest, msgs); err != nil {
		return fmt.Errorf("eventbus: publish %s via %s: %w", dest.Name, be.name, err)
	}
	return nil
}

func checkMessage(m *Message) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", ErrMalformed)
	}
	return validateType("message type", m.Type)
}

func (b *Bus) publish(ctx context.Context, dest driver.Destination, m *Message) error {
	if b.screensPublish() {
		return b.publishContent(ctx, dest, []*Message{m})
	}
	be, err := b.backendFor(dest)
	if err != nil {
		return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
	}
	b.fill(m)
	// The driver refuses an oversize message before the wire with a
	// *driver.TooLargeError (the conformance suite holds it to that).
	one := [1]*Message{m}
	if err := b.send(ctx, be, dest, one[:]); err != nil {
		return fmt.Errorf("eventbus: publish %s via %s: %w", dest.Name, be.name, err)
	}
	return nil
}

// destKey identifies a destination by its parts, so that the hot path finds
// the built name without allocating.
type destKey struct {
	pattern driver.Pattern
	a, b    string
}

// maxCachedDestinations bounds the cache: names beyond it are built per call.
const maxCachedDestinations = 4096

// destination returns the logical destination of pattern p and its parts
// (one or two), from a cache of names already built.
func (b *Bus) destination(p driver.Pattern, a, second string) driver.Destination {
	k := destKey{p, a, second}
	b.destMu.RLock()
	d, ok := b.dests[k]
	b.destMu.RUnlock()
	if ok {
		return d
	}
	if second == "" {
		d = driver.NewDestination(p, a)
	} else {
		d = driver.NewDestination(p, a, second)
	}
	b.destMu.Lock()
	if len(b.dests) < maxCachedDestinations {
		b.dests[k] = d
	}
	b.destMu.Unlock()
	return d
}
