package rabbitbus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// ReadDeadLetters passes the messages held on dl, oldest first, up to as
// many as the queue held when it started, and gives them all back to the
// queue before it returns.
//
// The dead letters of a destination are the messages of its keeper queue,
// PREFIX.deadletter.<origin>, which no subscription consumes. AMQP 0-9-1
// has no way to look at a queue's messages without taking them, so the
// driver browses a queue by taking its messages with basic.get on a
// channel of its own, without acking them, and gives every one back
// (basic.nack with requeue) before it returns. What that means:
//
//   - The broker puts requeued messages back in their place, so the order
//     is kept, but marks them redelivered (on quorum queues,
//     x-delivery-count grows with each read, which is why keeper queues
//     have no delivery limit). Groups subscribed to the destination have
//     queues of their own and see none of this.
//   - A read holds every message it passed until it returns: a very long
//     dead-letter queue is read in full into memory unless fn stops early.
//   - Two reads (or a read and a delete) at once each see only what the
//     other does not hold.
//
// A Ref is the x-eventbus-ref header that the driver gives every message it
// publishes to a dead-letter destination ("r:" and its value); a message
// that came by another way (dead-lettered by the broker at a quorum
// queue's delivery limit, or published by another client) is named by a
// digest of its properties, headers and body ("h:" and the digest), and
// deleting that Ref removes one of the messages that are alike.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	const op = "read dead letters"
	return d.browse(ctx, op, dl, func(m *amqp.Delivery) (bool, error) {
		msg, _ := decode(m)
		if msg == nil {
			msg = &driver.Message{Data: m.Body}
		}
		if len(msg.Data) == 0 && len(m.Body) > 0 {
			msg.Data = m.Body
		}
		return fn(driver.DeadLetterEntry{Ref: deadLetterRef(m), Message: msg}), nil
	})
}

// refHeader names a dead letter for DeleteDeadLetters.
const refHeader = "x-eventbus-ref"

// refSource makes the values of refHeader: a random prefix per driver and
// a counter.
type refSource struct {
	prefix string
	n      atomic.Uint64
}

func newRefSource() *refSource {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &refSource{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (r *refSource) next() string { return r.prefix + strconv.FormatUint(r.n.Add(1), 36) }

// DeadLetterDestinations lists the dead-letter destinations whose keeper
// queues this driver declared (published to, subscribed to, or declared as
// the dead-letter exchange target of a quorum queue), sorted by name. AMQP
// cannot list a broker's queues: destinations that only other processes
// used are not listed (rabbitmqctl list_queues or the management API
// shows their queues, named PREFIX.deadletter.<origin>).
func (d *Driver) DeadLetterDestinations(context.Context) ([]driver.Destination, error) {
	if d.closed.Load() {
		return nil, d.errClosed()
	}
	var out []driver.Destination
	d.keepers.Range(func(_, v any) bool {
		out = append(out, v.(driver.Destination))
		return true
	})
	slices.SortFunc(out, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteDeadLetters removes the messages named by refs: it takes the
// messages held on dl as a read does, acks those whose Ref is one of refs
// (as many of them as refs names each) and gives the others back.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	const op = "delete dead letters"
	if len(refs) == 0 {
		return 0, d.onKeeper(ctx, op, dl, func(*amqp.Channel, string, int) error { return nil })
	}
	want := make(map[string]int, len(refs))
	for _, r := range refs {
		want[r]++
	}
	removed := 0
	err := d.browseOn(ctx, op, dl, func(ch *amqp.Channel, m *amqp.Delivery) (bool, bool, error) {
		ref := deadLetterRef(m)
		if want[ref] == 0 {
			return true, false, nil
		}
		if err := ch.Ack(m.DeliveryTag, false); err != nil {
			return false, false, err
		}
		want[ref]--
		removed++
		for _, n := range want {
			if n > 0 {
				return true, true, nil
			}
		}
		return false, true, nil
	})
	return removed, err
}

// PurgeDeadLetters removes every message held on dl (queue.purge) and
// returns how many the broker removed. Messages delivered to a consumer and
// not yet acked are not removed.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	const op = "purge dead letters"
	n := 0
	err := d.onKeeper(ctx, op, dl, func(ch *amqp.Channel, queue string, _ int) error {
		c, err := ch.QueuePurge(queue, false)
		n = c
		return err
	})
	return n, err
}

// browse takes the messages held on dl one by one, passes each to fn until
// it returns false, and gives them all back.
func (d *Driver) browse(ctx context.Context, op string, dl driver.Destination, fn func(m *amqp.Delivery) (bool, error)) error {
	return d.browseOn(ctx, op, dl, func(_ *amqp.Channel, m *amqp.Delivery) (bool, bool, error) {
		more, err := fn(m)
		return more, false, err
	})
}

// browseOn is browse with the channel, on which fn may ack the message it
// is passed (and then says so); every message fn did not ack goes back to
// the queue before browseOn returns.
func (d *Driver) browseOn(ctx context.Context, op string, dl driver.Destination, fn func(ch *amqp.Channel, m *amqp.Delivery) (more, acked bool, err error)) error {
	return d.onKeeper(ctx, op, dl, func(ch *amqp.Channel, queue string, held int) error {
		var (
			unacked uint64 // the highest tag taken and not acked
			acks    int
			err     error
		)
		for range held {
			if err = ctx.Err(); err != nil {
				break
			}
			m, ok, gerr := ch.Get(queue, false)
			if gerr != nil || !ok {
				err = gerr
				break
			}
			more, acked, ferr := fn(ch, &m)
			if acked {
				acks++
			} else {
				unacked = m.DeliveryTag
			}
			if err = ferr; err != nil || !more {
				break
			}
		}
		if unacked == 0 {
			return err
		}
		// Everything not acked goes back, in its place (closing the channel
		// would too, should this fail).
		if nerr := ch.Nack(unacked, true, true); nerr != nil {
			return errors.Join(err, nerr)
		}
		return errors.Join(err, d.awaitRequeued(ctx, ch, queue, held-acks))
	})
}

// awaitRequeued waits, for up to 5 seconds, until queue holds at least n
// messages ready: a quorum queue applies a requeue through its log, after
// the nack, so that a read or a delete right after this one could
// otherwise find the messages missing.
func (d *Driver) awaitRequeued(ctx context.Context, ch *amqp.Channel, queue string, n int) error {
	deadline := time.Now().Add(5 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		if err != nil || q.Messages >= n || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// onKeeper runs fn on a channel of its own with the name of dl's keeper
// queue and the number of messages it held; a queue that does not exist
// holds nothing and fn is not called.
func (d *Driver) onKeeper(ctx context.Context, op string, dl driver.Destination, fn func(ch *amqp.Channel, queue string, held int) error) error {
	if d.closed.Load() {
		return d.errClosed()
	}
	if dl.Pattern != driver.DeadLetter {
		return fmt.Errorf("rabbitbus: %s: %w", op, &DestinationError{Destination: dl.Name, Reason: "not a dead-letter destination"})
	}
	if _, err := routingKey(dl); err != nil {
		return fmt.Errorf("rabbitbus: %s: %w", op, err)
	}
	conn, err := d.connection(ctx)
	if err != nil {
		return fmt.Errorf("rabbitbus: %s: %w", op, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitbus: %s: open a channel: %w", op, classify(err))
	}
	defer ch.Close()
	queue := keeperQueue(d.opts.Prefix, dl)
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil
		}
		return fmt.Errorf("rabbitbus: %s on %q: %w", op, queue, classify(err))
	}
	if err := fn(ch, queue, q.Messages); err != nil {
		return fmt.Errorf("rabbitbus: %s on %q: %w", op, queue, classify(err))
	}
	return nil
}

// deadLetterRef names m for DeleteDeadLetters.
func deadLetterRef(m *amqp.Delivery) string {
	if r, ok := m.Headers[refHeader].(string); ok && r != "" {
		return "r:" + r
	}
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(m.MessageId)
	field(m.ContentType)
	field(m.Type)
	field(m.CorrelationId)
	field(strconv.FormatInt(m.Timestamp.UnixNano(), 10))
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		// The broker changes these as the message is delivered again.
		if k != "x-delivery-count" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		field(fmt.Sprint(m.Headers[k]))
	}
	field(string(m.Body))
	return "h:" + hex.EncodeToString(h.Sum(nil)[:16])
}
