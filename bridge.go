package eventbus

import (
	"context"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Bridge forwards a destination's messages from one registered backend to
// another, for example NATS events mirrored to a Kafka stream for analytics.
type Bridge struct {
	// From and To name the source and target backends.
	From, To string
	// Pattern and Name give the logical destination, the same on both
	// sides: the type of events and broadcasts, "<service>.<type>" for
	// commands, the stream's name for streams. Queries are not bridged.
	Pattern Pattern
	Name    string
	// Group is the bridge's consumer group on the source, durable where the
	// backend is, so that a restarted bridge resumes where it stopped.
	// Default "bridge-<To>". Broadcasts have no group.
	Group string
	// Filter, when not zero, forwards only the messages it matches; the
	// others are acked on the source and counted in Stats.Filtered.
	Filter Filter
	// Pipeline, when set, transforms each message; its outputs are
	// forwarded in order.
	Pipeline *Pipeline
}

// Bridge starts forwarding br. Each message is published to the target and
// acked on the source only after the target confirmed it: delivery is
// at-least-once (a crash between the two forwards the message again), and
// nothing is lost as long as the source keeps unacked messages (a Durable
// source). Messages keep their ID and source, so that a de-duplicating target
// drops the second copy. Order per key is kept where both backends keep it
// and the bridge runs one handler at a time (the default; WithConcurrency
// keeps order per key too). A failed publish to the target is a handler
// error: retried with the bus's retry policy, then dead-lettered on the
// source.
//
// Like every subscribe method it works before and after Start, and returns
// a *Subscription that stops the bridge. The source's subscription is opened
// on From whatever the routes say; Start validates both backends against the
// pattern.
func (b *Bus) Bridge(ctx context.Context, br Bridge, opts ...SubscribeOption) (*Subscription, error) {
	if err := validateToken("backend name", br.From); err != nil {
		return nil, fmt.Errorf("eventbus: bridge: %w", err)
	}
	if err := validateToken("backend name", br.To); err != nil {
		return nil, fmt.Errorf("eventbus: bridge: %w", err)
	}
	var dest driver.Destination
	switch br.Pattern {
	case driver.Event, driver.Broadcast, driver.Stream:
		if err := validateType("bridged name", br.Name); err != nil {
			return nil, fmt.Errorf("eventbus: bridge: %w", err)
		}
		dest = driver.NewDestination(br.Pattern, br.Name)
	case driver.Command:
		service, cmdType, _ := strings.Cut(br.Name, ".")
		if err := validateToken("service", service); err != nil {
			return nil, fmt.Errorf("eventbus: bridge: %w", err)
		}
		if err := validateType("command type", cmdType); err != nil {
			return nil, fmt.Errorf("eventbus: bridge: %w", err)
		}
		dest = driver.NewDestination(driver.Command, service, cmdType)
	default:
		return nil, fmt.Errorf("eventbus: bridge %s: %w: pattern %v cannot be bridged", br.Name, ErrInvalidName, br.Pattern)
	}
	group := br.Group
	if br.Pattern == driver.Broadcast {
		group = ""
	} else if group == "" {
		group = "bridge-" + br.To
	}
	if group != "" {
		if err := validateToken("group", group); err != nil {
			return nil, fmt.Errorf("eventbus: bridge: %w", err)
		}
	}
	r := &registration{kind: kindMessage, dest: dest, group: group, durable: group != ""}
	r.route.pinned, r.route.to = br.From, br.To
	r.handler = HandlerFunc(func(ctx context.Context, m *Message) error {
		to := r.route.toBe
		one := [1]*Message{m}
		if err := b.send(ctx, to, dest, one[:]); err != nil {
			err = fmt.Errorf("eventbus: bridge %s to %s: %w", dest.Name, to.name, err)
			if refused(err) {
				return Permanent(err)
			}
			return err
		}
		return nil
	})
	if !br.Filter.IsZero() {
		opts = append(opts, WithFilter(br.Filter))
	}
	if br.Pipeline != nil {
		opts = append(opts, WithPipeline(br.Pipeline))
	}
	return b.register(ctx, false, opts, r)
}
