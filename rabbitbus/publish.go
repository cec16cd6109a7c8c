package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// outgoing is one message on its way to an exchange.
type outgoing struct {
	exchange  string
	key       string
	mandatory bool
	pub       amqp.Publishing
}

// ErrUnroutable: a mandatory message (a command, a request) reached no queue.
var ErrUnroutable = errors.New("unroutable: no queue is bound to the destination")

// pubChannel is one channel in confirm mode that concurrent publishers
// share. Publishers write under mu, in order, and wait for their own
// confirmations, so confirmations pipeline. On a channel for mandatory
// messages one goroutine per channel instance matches confirmations and
// returns to the waiting batches (a return comes before its message's
// confirmation); on the others each publisher waits for amqp091's deferred
// confirmations of its messages, which the connection's reader settles
// without another goroutine in between.
type pubChannel struct {
	d         *Driver
	mandatory bool
	mu        sync.Mutex // serialises writes: sequence numbers follow publish order
	ch        *amqp.Channel
	cork      *corkConn // under ch's connection
	w         *waiters  // of ch, on a channel for mandatory messages
}

// waiters are the publishes waiting for the confirmations of one channel
// instance. A channel's sequence numbers start again at 1, so a new
// channel never shares them with the one it replaces.
type waiters struct {
	mu       sync.Mutex
	pending  map[uint64]*pubBatch // by publish sequence number
	returned map[uint64]bool      // pending mandatory messages the broker returned
	closed   bool                 // the channel closed: nothing more will be confirmed
}

// pubBatch is the confirmations a Publish call waits for: those of
// mandatory messages through left and done, the others through deferred.
type pubBatch struct {
	ch       *amqp.Channel
	deferred []*amqp.DeferredConfirmation

	mu   sync.Mutex
	left int
	err  error
	done chan struct{}
}

func (b *pubBatch) settle(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && b.err == nil {
		b.err = err
	}
	if b.left--; b.left == 0 {
		close(b.done)
	}
}

func (b *pubBatch) wait(ctx context.Context, d *Driver) error {
	for _, c := range b.deferred {
		select {
		case <-c.Done():
		case <-ctx.Done():
			return fmt.Errorf("waiting for the broker's confirmation: %w", ctx.Err())
		case <-d.closing:
			return fmt.Errorf("%w before the broker confirmed", driver.ErrClosed)
		}
		if !c.Acked() {
			// A closing channel settles what it still waited for as nacks.
			if b.ch.IsClosed() {
				return closedBeforeConfirm(d)
			}
			return errNack
		}
	}
	if b.done == nil {
		return nil
	}
	closing := d.closing
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the broker's confirmation: %w", ctx.Err())
	case <-closing:
		return fmt.Errorf("%w before the broker confirmed", driver.ErrClosed)
	}
}

// channel returns the open channel, opening one in confirm mode when there
// is none or the last one closed. Called with mu held.
func (p *pubChannel) channel(ctx context.Context) (*amqp.Channel, error) {
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch, nil
	}
	conn, err := p.d.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open a channel: %w", classify(err))
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", classify(err))
	}
	p.cork = p.d.corkOf(conn)
	if !p.mandatory {
		p.ch = ch
		return ch, nil
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	// Unbuffered: the connection's reader hands a return over before it
	// reads the confirmation that follows it, so the loop always sees the
	// return first.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	w := &waiters{pending: map[uint64]*pubBatch{}, returned: map[uint64]bool{}}
	p.ch, p.w = ch, w
	p.d.wg.Go(func() { p.loop(w, confirms, returns) })
	return ch, nil
}

// loop matches confirmations and returns of one channel instance to their
// publishers, until the channel closes.
func (p *pubChannel) loop(w *waiters, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			seq, _ := r.Headers[seqHeader].(int64)
			w.mu.Lock()
			if w.pending[uint64(seq)] != nil {
				w.returned[uint64(seq)] = true
			}
			w.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				p.failPending(w)
				return
			}
			w.mu.Lock()
			b := w.pending[c.DeliveryTag]
			returned := w.returned[c.DeliveryTag]
			delete(w.pending, c.DeliveryTag)
			if returned {
				delete(w.returned, c.DeliveryTag)
			}
			w.mu.Unlock()
			switch {
			case b == nil:
			case !c.Ack:
				b.settle(errNack)
			case returned:
				b.settle(ErrUnroutable)
			default:
				b.settle(nil)
			}
		}
	}
}

// failPending fails what was waiting on a channel that closed.
func (p *pubChannel) failPending(w *waiters) {
	w.mu.Lock()
	pending := w.pending
	w.pending, w.returned, w.closed = nil, nil, true
	w.mu.Unlock()
	err := closedBeforeConfirm(p.d)
	for _, b := range pending {
		b.settle(err)
	}
}

var errNack = fmt.Errorf("the broker refused the message (nack): %w", driver.ErrUnavailable)

func closedBeforeConfirm(d *Driver) error {
	if d.closed.Load() {
		return fmt.Errorf("%w before the broker confirmed", driver.ErrClosed)
	}
	return fmt.Errorf("the channel closed before the broker confirmed: %w", driver.ErrUnavailable)
}

// publish writes msgs in order and returns the batch to wait on.
func (p *pubChannel) publish(ctx context.Context, msgs []outgoing) (*pubBatch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, err := p.channel(ctx)
	if err != nil {
		return nil, err
	}
	if c := p.cork; c != nil && len(msgs) > 1 {
		// The batch leaves in a few writes.
		c.cork()
		defer c.uncork()
	}
	if !p.mandatory {
		b := &pubBatch{ch: ch, deferred: make([]*amqp.DeferredConfirmation, len(msgs))}
		for i := range msgs {
			m := &msgs[i]
			if b.deferred[i], err = ch.PublishWithDeferredConfirmWithContext(ctx, m.exchange, m.key, false, false, m.pub); err != nil {
				return nil, p.failed(err)
			}
		}
		return b, nil
	}
	b := &pubBatch{left: len(msgs), done: make(chan struct{})}
	w := p.w
	for i := range msgs {
		m := &msgs[i]
		seq := ch.GetNextPublishSeqNo()
		if m.pub.Headers == nil {
			m.pub.Headers = amqp.Table{}
		}
		m.pub.Headers[seqHeader] = int64(seq)
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			if p.d.closed.Load() {
				return nil, p.d.errClosed()
			}
			return nil, fmt.Errorf("the channel closed: %w", driver.ErrUnavailable)
		}
		w.pending[seq] = b
		w.mu.Unlock()
		if err := ch.PublishWithContext(ctx, m.exchange, m.key, true, false, m.pub); err != nil {
			w.mu.Lock()
			delete(w.pending, seq)
			w.mu.Unlock()
			return nil, p.failed(err)
		}
	}
	return b, nil
}

// failed is the error of a write that failed: the messages written before
// stay pending, their publisher gets this error and none of the batch may be
// assumed sent.
func (p *pubChannel) failed(err error) error {
	if p.d.closed.Load() {
		return p.d.errClosed()
	}
	return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
}
