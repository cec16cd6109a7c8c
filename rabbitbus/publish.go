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
// confirmations; one goroutine per channel instance matches confirmations
// and returns to the waiting batches, so confirmations pipeline.
type pubChannel struct {
	d  *Driver
	mu sync.Mutex // serialises writes: sequence numbers follow publish order
	ch *amqp.Channel

	pmu     sync.Mutex
	pending map[uint64]*pubWait
}

// pubWait is one published message waiting for its confirmation.
type pubWait struct {
	b        *pubBatch
	returned bool
}

// pubBatch is the confirmations a Publish call waits for.
type pubBatch struct {
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

func (b *pubBatch) wait(ctx context.Context, closing <-chan struct{}) error {
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
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	// Unbuffered: the connection's reader hands a return over before it
	// reads the confirmation that follows it, so the loop always sees the
	// return first.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	p.ch = ch
	p.d.wg.Go(func() { p.loop(confirms, returns) })
	return ch, nil
}

// loop matches confirmations and returns of one channel instance to their
// publishers, until the channel closes.
func (p *pubChannel) loop(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			seq, _ := r.Headers[seqHeader].(int64)
			p.pmu.Lock()
			if w := p.pending[uint64(seq)]; w != nil {
				w.returned = true
			}
			p.pmu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				p.failPending()
				return
			}
			p.pmu.Lock()
			w := p.pending[c.DeliveryTag]
			delete(p.pending, c.DeliveryTag)
			p.pmu.Unlock()
			switch {
			case w == nil:
			case !c.Ack:
				w.b.settle(fmt.Errorf("the broker refused the message (nack): %w", driver.ErrUnavailable))
			case w.returned:
				w.b.settle(ErrUnroutable)
			default:
				w.b.settle(nil)
			}
		}
	}
}

// failPending fails what was waiting on a channel that closed.
func (p *pubChannel) failPending() {
	p.pmu.Lock()
	pending := p.pending
	p.pending = map[uint64]*pubWait{}
	p.pmu.Unlock()
	err := fmt.Errorf("the channel closed before the broker confirmed: %w", driver.ErrUnavailable)
	if p.d.closed.Load() {
		err = fmt.Errorf("%w before the broker confirmed", driver.ErrClosed)
	}
	for _, w := range pending {
		w.b.settle(err)
	}
}

// publish writes msgs in order and returns the batch to wait on.
func (p *pubChannel) publish(ctx context.Context, msgs []outgoing) (*pubBatch, error) {
	b := &pubBatch{left: len(msgs), done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, err := p.channel(ctx)
	if err != nil {
		return nil, err
	}
	for i := range msgs {
		m := &msgs[i]
		seq := ch.GetNextPublishSeqNo()
		if m.mandatory {
			if m.pub.Headers == nil {
				m.pub.Headers = amqp.Table{}
			}
			m.pub.Headers[seqHeader] = int64(seq)
		}
		p.pmu.Lock()
		p.pending[seq] = &pubWait{b: b}
		p.pmu.Unlock()
		if err := ch.PublishWithContext(ctx, m.exchange, m.key, m.mandatory, false, m.pub); err != nil {
			p.pmu.Lock()
			delete(p.pending, seq)
			p.pmu.Unlock()
			// The messages written before stay pending; their publisher
			// gets this error and none of the batch may be assumed sent.
			if p.d.closed.Load() {
				return nil, p.d.errClosed()
			}
			return nil, fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
		}
	}
	return b, nil
}
