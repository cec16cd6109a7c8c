package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// queueSpec is how a subscription's queue is declared.
type queueSpec struct {
	name       string // "" lets the broker name an exclusive queue
	durable    bool
	autoDelete bool
	exclusive  bool
	args       amqp.Table
}

// durableArgs are the arguments of durable queues: the queue type, the
// quorum delivery limit, the optional expiry, and single active consumer
// for streams.
func (d *Driver) durableArgs(stream bool) amqp.Table {
	a := amqp.Table{"x-queue-type": string(d.opts.QueueType)}
	if d.opts.QueueType == Quorum && d.opts.DeliveryLimit > 0 {
		a["x-delivery-limit"] = int64(d.opts.DeliveryLimit)
	}
	if d.opts.QueueExpiry > 0 {
		a["x-expires"] = d.opts.QueueExpiry.Milliseconds()
	}
	if stream {
		a["x-single-active-consumer"] = true
	}
	return a
}

// keeperSpec is the queue that keeps the messages of the dead-letter
// destination dl: durable, of the configured type, without a delivery limit
// (reading dead letters gives them back to the queue, which a quorum queue
// counts as a delivery).
func (d *Driver) keeperSpec(dl driver.Destination) queueSpec {
	a := d.durableArgs(false)
	delete(a, "x-delivery-limit")
	return queueSpec{name: keeperQueue(d.opts.Prefix, dl), durable: true, args: a}
}

// spec chooses the queue of a subscription; see the package documentation.
func (d *Driver) spec(dest driver.Destination, opts driver.SubscribeOptions) (queueSpec, error) {
	p := dest.Pattern
	if opts.Group == "" {
		return queueSpec{exclusive: true, autoDelete: true, args: amqp.Table{"x-queue-type": "classic"}}, nil
	}
	name, err := groupQueue(d.opts.Prefix, dest, opts.Group)
	if err != nil {
		return queueSpec{}, err
	}
	switch {
	case !persistent(p):
		// Queries, broadcasts and replies are not kept for anyone: the queue
		// goes with its last member, so a request finds no route and fails
		// at once with no responders.
		return queueSpec{name: name, autoDelete: true, args: amqp.Table{"x-queue-type": "classic"}}, nil
	case opts.Durable:
		a := d.durableArgs(p == driver.Stream)
		if d.opts.QueueType == Quorum && d.opts.DeliveryLimit > 0 && p != driver.DeadLetter {
			a["x-dead-letter-exchange"] = exchangeName(d.opts.Prefix, driver.DeadLetter)
			a["x-dead-letter-routing-key"] = driver.DeadLetterOf(dest).Name
		}
		return queueSpec{name: name, durable: true, args: a}, nil
	default:
		a := amqp.Table{"x-queue-type": "classic", "x-expires": d.opts.GroupExpiry.Milliseconds()}
		if p == driver.Stream {
			a["x-single-active-consumer"] = true
		}
		return queueSpec{name: name, args: a}, nil
	}
}

// declareQueue declares q on ch and binds it to dest's exchange by dest's
// name, and to the requeue exchange by its own name. It returns the queue's
// name (the broker's, for a private queue).
func (d *Driver) declareQueueNamed(ch *amqp.Channel, dest driver.Destination, s queueSpec) (string, error) {
	q, err := ch.QueueDeclare(s.name, s.durable, s.autoDelete, s.exclusive, false, s.args)
	if err != nil {
		err = classify(err)
		var ce *ConflictError
		if errors.As(err, &ce) {
			return "", fmt.Errorf("rabbitbus: queue %q %w", s.name, err)
		}
		return "", fmt.Errorf("rabbitbus: declare queue %q: %w", s.name, err)
	}
	if err := ch.QueueBind(q.Name, dest.Name, d.ExchangeName(dest.Pattern), false, nil); err != nil {
		return "", fmt.Errorf("rabbitbus: bind queue %q to %q: %w", q.Name, dest.Name, classify(err))
	}
	if err := ch.QueueBind(q.Name, q.Name, d.requeueExchange(), false, nil); err != nil {
		return "", fmt.Errorf("rabbitbus: bind queue %q for delayed redelivery: %w", q.Name, classify(err))
	}
	if dl, ok := s.args["x-dead-letter-routing-key"].(string); ok {
		keeper := driver.Destination{Pattern: driver.DeadLetter, Name: dl}
		if _, err := d.declareQueueNamed(ch, keeper, d.keeperSpec(keeper)); err != nil {
			return "", err
		}
	}
	if dest.Pattern == driver.DeadLetter {
		d.keepers.Store(q.Name, dest)
	}
	return q.Name, nil
}

func (d *Driver) declareQueue(ch *amqp.Channel, name string, dest driver.Destination, s queueSpec) error {
	s.name = name
	_, err := d.declareQueueNamed(ch, dest, s)
	return err
}

// DeclareGroup declares the queue of a durable group and its bindings
// without consuming, so that it keeps what is published before its first
// member starts. On a dead-letter destination without group it declares
// the queue that keeps the destination's dead letters.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if d.closed.Load() {
		return d.errClosed()
	}
	if _, err := routingKey(dest); err != nil {
		return err
	}
	if opts.Group == "" {
		if dest.Pattern == driver.DeadLetter {
			return d.declareKeeper(ctx, dest) // the queue that keeps the dead letters
		}
		return fmt.Errorf("rabbitbus: declare group on %q: no group name", dest.Name)
	}
	s, err := d.spec(dest, opts)
	if err != nil {
		return err
	}
	return d.topology(ctx, func(ch *amqp.Channel) error {
		_, err := d.declareQueueNamed(ch, dest, s)
		return err
	})
}

// Subscribe declares the subscription's queue and bindings and starts a
// consumer on a channel of its own, with a prefetch of opts.MaxInFlight
// (Options.Prefetch when zero).
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	if d.closed.Load() {
		return nil, d.errClosed()
	}
	if _, err := routingKey(dest); err != nil {
		return nil, err
	}
	spec, err := d.spec(dest, opts)
	if err != nil {
		return nil, err
	}
	prefetch := opts.MaxInFlight
	if prefetch <= 0 {
		prefetch = d.opts.Prefetch
	}
	s := &subscription{d: d, dest: dest, spec: spec, sel: selection(dest, opts.Select), prefetch: min(prefetch, 65535),
		receiving: make(chan struct{}, 1), done: make(chan struct{})}
	if err := s.open(ctx, nil); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed.Load() {
		d.mu.Unlock()
		_ = s.ch.Close()
		return nil, d.errClosed()
	}
	d.subs[s] = struct{}{}
	d.mu.Unlock()
	return s, nil
}

type subscription struct {
	d        *Driver
	dest     driver.Destination
	spec     queueSpec
	sel      []driver.AttributeMatch // the attributes the broker selects on
	prefetch int

	mu         sync.Mutex
	ch         *amqp.Channel
	acks       *acker
	queue      string
	deliveries <-chan amqp.Delivery
	// receiving is held by the Receive that takes deliveries from the
	// channel, so that the acker learns their tags in the broker's order.
	receiving chan struct{}

	closed atomic.Bool
	done   chan struct{}
}

// handle is the driver's part of a delivery.
type handle struct {
	acks     *acker // of the channel that received it
	queue    string
	attempt  int
	delivery amqp.Delivery
}

// open (re)establishes the consumer, unless another goroutine did since the
// caller saw old.
func (s *subscription) open(ctx context.Context, old *amqp.Channel) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != old {
		return nil
	}
	conn, err := s.d.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitbus: subscribe to %q: open a channel: %w", s.dest.Name, classify(err))
	}
	fail := func(err error) error {
		_ = ch.Close()
		return fmt.Errorf("rabbitbus: subscribe to %q: %w", s.dest.Name, err)
	}
	queue, err := s.d.declareQueueNamed(ch, s.dest, s.spec)
	if err != nil {
		return fail(err)
	}
	if s.dest.Pattern == driver.Event {
		if err := s.d.applySelection(ctx, conn, ch, s.dest, queue, s.spec, s.sel); err != nil {
			return fail(err)
		}
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return fail(classify(err))
	}
	dl, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return fail(classify(err))
	}
	if s.acks != nil {
		_ = s.acks.flush() // of the channel that was lost: the broker redelivers
	}
	s.ch, s.queue, s.deliveries = ch, queue, dl
	s.acks = newAcker(ch, s.prefetch, ackDelay, func(err error) {
		s.d.log.Warn("rabbitbus: ack failed; messages will be redelivered", "queue", queue, "error", err)
	})
	return nil
}

// Receive returns between 1 and max deliveries. Concurrent calls take
// turns.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	max = cmp(max)
	select {
	case s.receiving <- struct{}{}:
		defer func() { <-s.receiving }()
	case <-s.done:
		return nil, s.d.errClosed()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		if s.closed.Load() {
			return nil, s.d.errClosed()
		}
		s.mu.Lock()
		ch, acks, queue, dl := s.ch, s.acks, s.queue, s.deliveries
		s.mu.Unlock()
		select {
		case m, ok := <-dl:
			if !ok {
				if s.closed.Load() {
					return nil, s.d.errClosed()
				}
				// The channel or the connection was lost: consume again.
				if err := s.open(ctx, ch); err != nil {
					if errors.Is(err, driver.ErrClosed) || ctx.Err() != nil {
						return nil, err
					}
					select {
					case <-time.After(100 * time.Millisecond):
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-s.done:
						return nil, s.d.errClosed()
					}
				}
				continue
			}
			out := []*driver.Delivery{s.delivery(acks, queue, m)}
			for len(out) < max {
				select {
				case m, ok := <-dl:
					if !ok {
						return out, nil
					}
					out = append(out, s.delivery(acks, queue, m))
					continue
				default:
				}
				break
			}
			return out, nil
		case <-s.done:
			return nil, s.d.errClosed()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func cmp(max int) int {
	if max < 1 {
		return 1
	}
	return max
}

// received is a delivery, its message and its handle, allocated as one.
type received struct {
	del driver.Delivery
	msg driver.Message
	h   handle
}

func (s *subscription) delivery(acks *acker, queue string, m amqp.Delivery) *driver.Delivery {
	acks.received(m.DeliveryTag)
	r := &received{h: handle{acks: acks, queue: queue, delivery: m}}
	msg, err := decodeInto(&r.h.delivery, &r.msg)
	r.h.attempt = attempt(&r.h.delivery)
	r.del = driver.Delivery{Message: msg, Err: err, Attempt: r.h.attempt, Handle: &r.h}
	return &r.del
}

// attempt counts deliveries to the group: those before the driver last
// republished the message (its attempt header), plus the broker's count
// since: x-delivery-count on quorum queues, the redelivered flag otherwise.
func attempt(m *amqp.Delivery) int {
	n := 1 + int(intHeader(m.Headers[attemptHeader]))
	if c, ok := m.Headers["x-delivery-count"]; ok {
		return n + int(intHeader(c))
	}
	if m.Redelivered {
		n++
	}
	return n
}

func intHeader(v any) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case int:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

// handles checks that ds belong to s and returns their handles.
func (s *subscription) handles(op string, ds []*driver.Delivery) ([]*handle, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("rabbitbus: %s: %w", op, driver.ErrClosed)
	}
	hs := make([]*handle, len(ds))
	for i, d := range ds {
		h, ok := d.Handle.(*handle)
		if !ok {
			return nil, fmt.Errorf("rabbitbus: %s: a delivery of another driver", op)
		}
		hs[i] = h
	}
	return hs, nil
}

// settleErr explains a settlement on a channel that is gone: the broker
// gives the message to the group again.
func settleErr(op string, err error) error {
	return fmt.Errorf("rabbitbus: %s: the channel that received the message is gone, the broker redelivers it: %w: %w", op, driver.ErrUnavailable, err)
}

// Ack acknowledges the deliveries at once, or within ackDelay coalesced
// with the acks of the calls before when an ack frame went less than
// ackDelay ago: one basic.ack with multiple set for those that, with the
// deliveries settled before, are every delivery of their channel up to the
// highest of them, and one frame each for the rest (see acker).
func (s *subscription) Ack(_ context.Context, ds []*driver.Delivery) error {
	hs, err := s.handles("ack", ds)
	if err != nil {
		return err
	}
	var errs []error
	tags := make([]uint64, 0, len(hs))
	for len(hs) > 0 {
		// Deliveries of one channel instance; after a reconnection a batch
		// may hold some of the channel before.
		a, rest := hs[0].acks, hs[:0]
		tags = tags[:0]
		for _, h := range hs {
			if h.acks == a {
				tags = append(tags, h.delivery.DeliveryTag)
			} else {
				rest = append(rest, h)
			}
		}
		hs = rest
		if err := a.ack(tags); err != nil {
			errs = append(errs, settleErr("ack", err))
		}
	}
	return errors.Join(errs...)
}

// Term settles without redelivery: the message is acked (the bus
// dead-lettered it already).
func (s *subscription) Term(ctx context.Context, ds []*driver.Delivery) error {
	return s.Ack(ctx, ds)
}

// Nack gives the deliveries back for redelivery after delay. See the
// package documentation: quorum queues requeue natively when delay is zero;
// otherwise the driver republishes a copy carrying its attempt count
// (through a wait queue when delay is positive) and acks the original once
// the copy is confirmed.
func (s *subscription) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	hs, err := s.handles("nack", ds)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		if err := s.nack(ctx, h, delay); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *subscription) nack(ctx context.Context, h *handle, delay time.Duration) error {
	if delay <= 0 && s.d.opts.QueueType == Quorum && s.spec.durable {
		if err := h.acks.requeue(h.delivery.DeliveryTag); err != nil {
			return settleErr("nack", err)
		}
		return nil
	}
	out := outgoing{exchange: "", key: h.queue, pub: republishing(&h.delivery, h.attempt)}
	if delay > 0 {
		ms, err := s.d.waitQueue(ctx, delay)
		if err != nil {
			return s.requeue(h, err)
		}
		out.exchange = s.d.waitExchange()
		out.pub.Headers[delayHeader] = ms
	}
	if err := s.d.send(ctx, []outgoing{out}); err != nil {
		return s.requeue(h, err)
	}
	if err := h.acks.ack([]uint64{h.delivery.DeliveryTag}); err != nil {
		// The copy is queued and the original comes back too: a duplicate,
		// never a loss.
		return settleErr("nack", err)
	}
	return nil
}

// requeue gives a delivery back at once when its delayed copy could not be
// published.
func (s *subscription) requeue(h *handle, cause error) error {
	s.d.log.Warn("rabbitbus: delayed redelivery failed; requeueing now", "queue", h.queue, "error", cause)
	if err := h.acks.requeue(h.delivery.DeliveryTag); err != nil {
		return settleErr("nack", err)
	}
	return nil
}

// delayHeader routes a delayed copy to its wait queue.
const delayHeader = "x-eventbus-delay"

// republishing is the copy of a delivery that the driver publishes to
// redeliver it, with the number of deliveries so far.
func republishing(m *amqp.Delivery, attempt int) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+1)
	for k, v := range m.Headers {
		if (!brokerHeaders[k] || k == refHeader) && k != delayHeader {
			h[k] = v
		}
	}
	h[attemptHeader] = int64(attempt)
	return amqp.Publishing{
		Headers: h, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		DeliveryMode: m.DeliveryMode, Priority: m.Priority, CorrelationId: m.CorrelationId,
		ReplyTo: m.ReplyTo, MessageId: m.MessageId, Timestamp: m.Timestamp, Type: m.Type,
		AppId: m.AppId, Body: m.Body,
	}
}

// waitQueue declares the wait queue of delay (rounded up to 100 ms below
// 10 s, to the second below 10 min, to the minute above) and returns the
// value of its delay header. Messages wait there for the queue's TTL, then
// are dead-lettered to the requeue exchange, which routes them back to their
// queue by its name.
func (d *Driver) waitQueue(ctx context.Context, delay time.Duration) (string, error) {
	step := 100 * time.Millisecond
	switch {
	case delay >= 10*time.Minute:
		step = time.Minute
	case delay >= 10*time.Second:
		step = time.Second
	}
	ttl := (delay + step - 1) / step * step
	ms := strconv.FormatInt(ttl.Milliseconds(), 10)
	name := d.opts.Prefix + ".wait." + ms
	err := d.topology(ctx, func(ch *amqp.Channel) error {
		args := amqp.Table{
			"x-queue-type":           "classic",
			"x-message-ttl":          ttl.Milliseconds(),
			"x-dead-letter-exchange": d.requeueExchange(),
			// Publishing does not count as use: the queue outlives the
			// last message put in it by 10 minutes, as it is redeclared at
			// each use.
			"x-expires": (ttl + 10*time.Minute).Milliseconds(),
		}
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			return fmt.Errorf("rabbitbus: declare wait queue %q: %w", name, classify(err))
		}
		if err := ch.QueueBind(name, "", d.waitExchange(), false, amqp.Table{"x-match": "all", delayHeader: ms}); err != nil {
			return fmt.Errorf("rabbitbus: bind wait queue %q: %w", name, classify(err))
		}
		return nil
	})
	return ms, err
}

// Close cancels the consumer by closing its channel: the broker puts back
// at once every delivery it sent on it and that was not acked, buffered or
// handed out.
func (s *subscription) Close(ctx context.Context) error {
	return s.close(ctx)
}

func (s *subscription) close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	s.d.forget(s)
	s.mu.Lock()
	ch, acks := s.ch, s.acks
	s.mu.Unlock()
	if ch == nil || ch.IsClosed() {
		return nil
	}
	// The acks that wait to be coalesced go before the channel closes.
	_ = acks.flush()
	done := make(chan struct{})
	s.d.wg.Go(func() {
		defer close(done)
		_ = ch.Close()
	})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// The close frame is on its way; the goroutine ends with the
		// connection at the latest.
		return fmt.Errorf("rabbitbus: close subscription to %q: %w", s.dest.Name, ctx.Err())
	}
}
