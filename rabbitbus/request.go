package rabbitbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// directReplyTo is RabbitMQ's pseudo-queue for replies: a requester consumes
// it (auto-ack) on the channel it publishes its requests on, and the broker
// routes each reply straight to that channel, with no queue.
const directReplyTo = "amq.rabbitmq.reply-to"

// requester is the driver's request channel: requests go out on it as
// mandatory publishes, replies and returns come back on it.
type requester struct {
	ch     *amqp.Channel
	prefix string
	seq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan reply
}

type reply struct {
	m   *driver.Message
	err error
}

// requester returns the open request channel, opening it when needed.
func (d *Driver) requester(ctx context.Context) (*requester, error) {
	d.rrMu.Lock()
	defer d.rrMu.Unlock()
	if d.rr != nil && !d.rr.ch.IsClosed() {
		return d.rr, nil
	}
	conn, err := d.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open a channel: %w", classify(err))
	}
	replies, err := ch.Consume(directReplyTo, "", true, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("consume %s: %w", directReplyTo, classify(err))
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	var b [6]byte
	_, _ = rand.Read(b[:])
	r := &requester{ch: ch, prefix: hex.EncodeToString(b[:]) + "-", pending: map[string]chan reply{}}
	d.wg.Go(func() { r.loop(replies, returns) })
	d.rr = r
	return r, nil
}

func (r *requester) loop(replies <-chan amqp.Delivery, returns <-chan amqp.Return) {
	for replies != nil || returns != nil {
		select {
		case m, ok := <-replies:
			if !ok {
				replies = nil
				continue
			}
			msg, err := decode(&m)
			r.answer(m.CorrelationId, reply{msg, err})
		case ret, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			r.answer(ret.CorrelationId, reply{err: driver.ErrNoResponders})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, c := range r.pending {
		c <- reply{err: fmt.Errorf("the request channel closed: %w", driver.ErrUnavailable)}
		delete(r.pending, id)
	}
}

func (r *requester) answer(id string, rep reply) {
	r.mu.Lock()
	c := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if c != nil {
		c <- rep
	}
}

// Request publishes req to dest's queue, mandatory, with the direct reply-to
// address, and waits for one reply. A request that no queue is bound to (no
// responder subscribes: the queue of a query group goes with its last
// member) comes back unroutable: ErrNoResponders.
func (d *Driver) Request(ctx context.Context, dest driver.Destination, req *driver.Message) (*driver.Message, error) {
	if d.closed.Load() {
		return nil, d.errClosed()
	}
	key, err := routingKey(dest)
	if err != nil {
		return nil, err
	}
	msgs := []*driver.Message{req}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return nil, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, err)
	}
	if err := driver.CheckSize(msgs, d.opts.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, err)
	}
	r, err := d.requester(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, err)
	}
	id := r.prefix + strconv.FormatUint(r.seq.Add(1), 36)
	c := make(chan reply, 1)
	r.mu.Lock()
	r.pending[id] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
	}()
	pub := encode(req, false)
	pub.ReplyTo, pub.CorrelationId = directReplyTo, id
	if err := r.ch.PublishWithContext(ctx, d.ExchangeName(dest.Pattern), key, true, false, pub); err != nil {
		return nil, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, classify(err))
	}
	select {
	case rep := <-c:
		if rep.err != nil {
			return rep.m, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, rep.err)
		}
		return rep.m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitbus: request to %q: %w", dest.Name, ctx.Err())
	case <-d.closing:
		return nil, d.errClosed()
	}
}

// Reply answers the request that d carries, through the default exchange to
// its direct reply-to address; it returns once the reply is written to the
// connection. A requester that is gone makes
// the reply vanish, as on any broker.
func (d *Driver) Reply(ctx context.Context, dl *driver.Delivery, rep *driver.Message) error {
	if d.closed.Load() {
		return d.errClosed()
	}
	h, ok := dl.Handle.(*handle)
	if !ok {
		return fmt.Errorf("rabbitbus: reply: a delivery of another driver")
	}
	if h.delivery.ReplyTo == "" {
		return fmt.Errorf("rabbitbus: reply: the request carries no reply-to address")
	}
	msgs := []*driver.Message{rep}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return fmt.Errorf("rabbitbus: reply: %w", err)
	}
	if err := driver.CheckSize(msgs, d.opts.MaxMessageSize); err != nil {
		return fmt.Errorf("rabbitbus: reply: %w", err)
	}
	pub := encode(rep, false)
	pub.CorrelationId = h.delivery.CorrelationId
	// Not waiting for the confirmation: the requester's receipt is the
	// reply's, and a reply's loss is the requester's timeout.
	if _, err := d.pubs[int(d.next.Add(1))%len(d.pubs)].publish(ctx, []outgoing{{exchange: "", key: h.delivery.ReplyTo, pub: pub}}); err != nil {
		return fmt.Errorf("rabbitbus: reply: %w", err)
	}
	return nil
}
