package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// Attribute selection (driver.SubscribeOptions.Select) on events: the
// queue of the subscription is bound, instead of to PREFIX.events by its
// routing key, to a headers exchange of its own, PREFIX.select.<queue>,
// which is bound to PREFIX.events by the routing key and passes on only
// the messages whose application properties hold every selected value
// (x-match all; one binding for the cloudEvents: names, one for the
// cloudEvents_ names). The exchange is auto-deleted with the queue.

// selectable reports whether the attribute name travels as an application
// property whose value is the string the bus compares: datacontenttype is
// the content-type property, and time may come as an AMQP timestamp from
// other producers.
func selectable(name string) bool {
	return name != "datacontenttype" && name != "time"
}

// selection is the part of sel the driver applies on dest, sorted by name;
// nil when it applies none.
func selection(dest driver.Destination, sel []driver.AttributeMatch) []driver.AttributeMatch {
	if dest.Pattern != driver.Event {
		return nil
	}
	var out []driver.AttributeMatch
	for _, m := range sel {
		if selectable(m.Name) && m.Value != "" {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b driver.AttributeMatch) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// selectNames are the headers exchange of a queue's selection and the
// exclusive queue that serializes changes to it across
// processes. ok is false when the names would be too long.
func (d *Driver) selectNames(queue string) (exchange, lock string, ok bool) {
	exchange = d.opts.Prefix + ".select." + queue
	lock = d.opts.Prefix + ".select-lock." + queue
	return exchange, lock, len(lock) <= 255
}

// applySelection makes the bindings of queue on the event destination dest
// follow sel (as selection returns it): through its select exchange when
// sel is not empty, by the routing key otherwise, with the bindings of an
// earlier selection removed. The routing-key binding, which
// declareQueueNamed made, stays until the new bindings are in place, so
// the queue never goes without a route. Changes to a group's queue hold
// the driver's select mutex and an exclusive queue on the broker, so that
// members subscribing at once, here or in other processes, take turns. A
// private queue is new: nothing of it is to remove.
func (d *Driver) applySelection(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel, dest driver.Destination, queue string, spec queueSpec, sel []driver.AttributeMatch) error {
	private := spec.name == ""
	exchange, lock, ok := d.selectNames(queue)
	if !ok || (private && len(sel) == 0) {
		return nil
	}
	if !private {
		unlock, err := d.lockSelection(ctx, conn, lock)
		if err != nil {
			return err
		}
		defer unlock()
	}
	events := d.ExchangeName(driver.Event)
	if len(sel) == 0 {
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			return fmt.Errorf("rabbitbus: remove the attribute selection of %q: %w", queue, classify(err))
		}
		return nil
	}
	durable := spec.durable
	steps := []struct {
		what string
		do   func() error
	}{
		{"remove the earlier selection", func() error { return ch.ExchangeDelete(exchange, false, false) }},
		{"declare exchange " + exchange, func() error {
			return ch.ExchangeDeclare(exchange, "headers", durable, true, false, false, nil)
		}},
		{"bind " + exchange + " to " + events, func() error { return ch.ExchangeBind(exchange, dest.Name, events, false, nil) }},
		{"bind the selection", func() error { return ch.QueueBind(queue, "", exchange, false, selectArgs(cePrefix, sel)) }},
		{"bind the selection", func() error { return ch.QueueBind(queue, "", exchange, false, selectArgs(ceAltPrefix, sel)) }},
		{"unbind the routing key", func() error { return ch.QueueUnbind(queue, dest.Name, events, nil) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("rabbitbus: select attributes on %q: %s: %w", queue, s.what, classify(err))
		}
	}
	return nil
}

// selectArgs are the arguments of a headers binding that matches sel on
// the application properties named with prefix.
func selectArgs(prefix string, sel []driver.AttributeMatch) amqp.Table {
	t := amqp.Table{"x-match": "all"}
	for _, m := range sel {
		t[prefix+m.Name] = m.Value
	}
	return t
}

// lockSelection takes the driver's select mutex and then the exclusive
// queue lock on the broker (declaring it fails with RESOURCE_LOCKED while
// another connection holds it), within ctx. The returned func releases
// both. A process that dies releases the queue with its connection.
func (d *Driver) lockSelection(ctx context.Context, conn *amqp.Connection, lock string) (func(), error) {
	select {
	case d.selectMu <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitbus: waiting to change an attribute selection: %w", ctx.Err())
	}
	wait := 10 * time.Millisecond
	for {
		ch, err := conn.Channel()
		if err != nil {
			<-d.selectMu
			return nil, fmt.Errorf("rabbitbus: open a channel: %w", classify(err))
		}
		_, err = ch.QueueDeclare(lock, false, false, true, false, nil)
		if err == nil {
			return func() {
				_, _ = ch.QueueDelete(lock, false, false, false)
				_ = ch.Close()
				<-d.selectMu
			}, nil
		}
		_ = ch.Close()
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.ResourceLocked {
			<-d.selectMu
			return nil, fmt.Errorf("rabbitbus: lock %q: %w", lock, classify(err))
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			<-d.selectMu
			return nil, fmt.Errorf("rabbitbus: waiting for lock %q: %w", lock, ctx.Err())
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
