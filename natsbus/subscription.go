package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
)

// inactiveThreshold is how long the server keeps a non-durable consumer
// without any member pulling from it.
const inactiveThreshold = time.Minute

// The consume loop's pull requests ask the server for an idle heartbeat every
// pullHeartbeat; the jetstream client pulls again after two of them go
// missing. That is also its only way out when it stops pulling on its own:
// a pull request that falls due while the previous one is still being sent
// is skipped, and if the messages already asked for then all arrive, nothing
// asks for more while the stream still holds messages. With the client's
// defaults (15 s heartbeats) such a stall lasted 30 s; with these it lasts
// about 2 s, for one server heartbeat a second per idle subscription.
const (
	pullHeartbeat = time.Second
	pullExpiry    = 10 * time.Second
)

// limiter bounds the deliveries handed out and not yet settled
// (SubscribeOptions.MaxInFlight). A nil limiter bounds nothing.
type limiter chan struct{}

func newLimiter(n int) limiter {
	if n <= 0 {
		return nil
	}
	return make(limiter, n)
}

// acquire takes one slot, waiting for it.
func (l limiter) acquire(ctx context.Context, done <-chan struct{}) error {
	if l == nil {
		return nil
	}
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return driver.ErrClosed
	}
}

// tryAcquire takes one slot if one is free.
func (l limiter) tryAcquire() bool {
	if l == nil {
		return true
	}
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

// release frees n slots. Settling a delivery twice frees no slot it did not
// take.
func (l limiter) release(n int) {
	for ; l != nil && n > 0; n-- {
		select {
		case <-l:
		default:
			return
		}
	}
}

// storedSub is a subscription on a JetStream pull consumer. One Consume loop
// of the jetstream client pulls in batches (with heartbeats, and again after
// a reconnect) and hands messages to Receive through a buffered channel.
//
// Every message the subscription holds unsettled — buffered in msgs or
// handed out by Receive — is in held, with the tick of the keep-alive
// goroutine when it arrived or was last extended: that goroutine sends
// in-progress acks for those held longer than a tick, and close gives back
// all of them.
type storedSub struct {
	d         *Driver
	subject   string
	stream    string
	consumer  string
	ephemeral bool
	msgs      chan jetstream.Msg
	inflight  limiter
	cc        jetstream.ConsumeContext
	tick      time.Duration // the keep-alive period, a third of the ack wait

	heldMu  sync.Mutex
	held    map[jetstream.Msg]uint64
	epoch   uint64 // keep-alive ticks so far; guarded by heldMu
	closing bool   // held was given back; guarded by heldMu

	closeOnce sync.Once
	done      chan struct{} // closed by close
	keeperEnd chan struct{} // closed when the keep-alive goroutine returned
	failOnce  sync.Once
	failed    chan struct{} // closed when the consumer stopped for good
	failErr   error
}

// minAckWait is the shortest ack wait the driver asks the server for: the
// keep-alive ticks at a third of it, and a shorter one leaves too little room
// for a loaded machine to send the in-progress acks in time.
const minAckWait = time.Second

// consumerConfig is the configuration of the consumer behind a subscription
// on subj, and its name ("" for a private subscription's ephemeral one).
func (d *Driver) consumerConfig(dest driver.Destination, subj string, opts driver.SubscribeOptions) (jetstream.ConsumerConfig, string) {
	ackWait := opts.AckWait
	if ackWait <= 0 {
		ackWait = d.opts.AckWait
	}
	ackWait = max(ackWait, minAckWait)
	cfg := jetstream.ConsumerConfig{
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		FilterSubject: subj,
		// The bus dead-letters at its own attempt limit and then terms; a
		// server limit would silently stop deliveries before that.
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if opts.StartAt == driver.StartFirst {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if opts.MaxInFlight > 0 {
		cfg.MaxAckPending = max(opts.MaxInFlight, 1000)
	}
	if opts.Group == "" {
		cfg.InactiveThreshold = inactiveThreshold
		return cfg, ""
	}
	name := consumerName(opts.Group, dest.Name)
	if opts.Durable {
		cfg.Durable = name
	} else {
		cfg.Name = name
		cfg.InactiveThreshold = inactiveThreshold
	}
	return cfg, name
}

// DeclareGroup creates the durable consumer of opts.Group on a JetStream
// destination, as a subscription of that group would, without consuming:
// messages published from now on are kept for the group. A core NATS
// destination keeps nothing, and is refused with driver.ErrUnsupported.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	subj, err := d.checkDest("declare group", dest)
	if err != nil {
		return err
	}
	if d.js == nil || !persistent(dest.Pattern) {
		return fmt.Errorf("natsbus: declare group on %q: core NATS keeps nothing for an absent group: %w", subj, driver.ErrUnsupported)
	}
	if opts.Group == "" || !opts.Durable {
		return fmt.Errorf("natsbus: declare group on %q: a declared group needs a name and Durable: %w", subj, driver.ErrUnsupported)
	}
	if err := checkGroup(opts.Group); err != nil {
		return fmt.Errorf("natsbus: declare group on %q: %w", subj, err)
	}
	stream := streamName(d.opts.StreamPrefix, dest.Pattern)
	cfg, name := d.consumerConfig(dest, subj, opts)
	if _, err := d.groupConsumer(ctx, stream, name, cfg); err != nil {
		return fmt.Errorf("natsbus: declare group on %q: consumer on stream %s: %w", subj, stream, d.classify(err))
	}
	return nil
}

func (d *Driver) subscribeStored(ctx context.Context, dest driver.Destination, subj string, opts driver.SubscribeOptions) (*storedSub, error) {
	stream := streamName(d.opts.StreamPrefix, dest.Pattern)
	cfg, name := d.consumerConfig(dest, subj, opts)
	var cons jetstream.Consumer
	var err error
	s := &storedSub{
		d:         d,
		subject:   subj,
		stream:    stream,
		inflight:  newLimiter(opts.MaxInFlight),
		tick:      cfg.AckWait / 3,
		held:      make(map[jetstream.Msg]uint64),
		done:      make(chan struct{}),
		keeperEnd: make(chan struct{}),
		failed:    make(chan struct{}),
	}
	if name == "" {
		s.ephemeral = true
		cons, err = d.js.CreateConsumer(ctx, stream, cfg)
	} else {
		cons, err = d.groupConsumer(ctx, stream, name, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer on stream %s: %w", stream, d.classify(err))
	}
	s.consumer = cons.CachedInfo().Name
	prefetch := d.opts.Prefetch
	if opts.MaxInFlight > 0 {
		prefetch = min(prefetch, opts.MaxInFlight)
	}
	s.msgs = make(chan jetstream.Msg, prefetch)
	s.cc, err = cons.Consume(s.handle,
		jetstream.PullMaxMessages(prefetch),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(s.onError))
	if err != nil {
		if s.ephemeral {
			_ = d.js.DeleteConsumer(ctx, stream, s.consumer)
		}
		return nil, fmt.Errorf("consume %s: %w", s.consumer, d.classify(err))
	}
	go s.keepAlive()
	return s, nil
}

// keepAlive extends the ack deadline of every message held unsettled for
// longer than a tick, once a tick: a held message gets an in-progress ack
// between one and two ticks (a third to two thirds of the ack wait) after it
// arrived or was last extended, so its deadline never passes while the
// subscription is open. Messages settled within a tick, the common case,
// cost nothing but their entry in held.
func (s *storedSub) keepAlive() {
	defer close(s.keeperEnd)
	t := time.NewTicker(s.tick)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-t.C:
		case <-s.done:
			return
		}
		due = due[:0]
		s.heldMu.Lock()
		s.epoch++
		for m, since := range s.held {
			if since+1 < s.epoch {
				s.held[m] = s.epoch
				due = append(due, m)
			}
		}
		s.heldMu.Unlock()
		for _, m := range due {
			// Fire and forget, like acks. A message settled meanwhile
			// refuses it locally (already acknowledged); the server ignores
			// it for one settled by another path.
			_ = m.InProgress()
		}
	}
}

// groupConsumer returns the group's consumer, creating it when it does not
// exist. An existing group keeps its position; its ack wait and ack window
// follow the newest member.
func (d *Driver) groupConsumer(ctx context.Context, stream, name string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	for range 3 {
		cons, err := d.js.Consumer(ctx, stream, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = d.js.CreateConsumer(ctx, stream, cfg)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // another member created it first
			}
			return cons, err
		}
		if err != nil {
			return nil, err
		}
		have := cons.CachedInfo().Config
		if have.FilterSubject != cfg.FilterSubject {
			return nil, fmt.Errorf("consumer %s exists with filter %q, not %q", name, have.FilterSubject, cfg.FilterSubject)
		}
		if have.AckWait != cfg.AckWait || (cfg.MaxAckPending > 0 && have.MaxAckPending != cfg.MaxAckPending) {
			have.AckWait = cfg.AckWait
			if cfg.MaxAckPending > 0 {
				have.MaxAckPending = cfg.MaxAckPending
			}
			return d.js.UpdateConsumer(ctx, stream, have)
		}
		return cons, nil
	}
	return nil, fmt.Errorf("consumer %s: created and deleted concurrently", name)
}

// handle runs on the consume loop's goroutine; blocking here is the back
// pressure that stops pulling while Receive is behind. The message is held
// (and kept alive) from here on, also while handle waits for room.
func (s *storedSub) handle(m jetstream.Msg) {
	s.heldMu.Lock()
	if s.closing {
		s.heldMu.Unlock()
		// Closed: give it back now rather than after the ack wait.
		_ = m.Nak()
		return
	}
	s.held[m] = s.epoch
	s.heldMu.Unlock()
	select {
	case s.msgs <- m:
	case <-s.done:
		// close gives back every held message, this one too.
	}
}

func (s *storedSub) onError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.fail(fmt.Errorf("natsbus: consumer %s on %q is gone: %w", s.consumer, s.subject, err))
		return
	}
	s.d.opts.Logger.Warn("natsbus: consumer error", "subject", s.subject, "consumer", s.consumer, "err", err)
}

func (s *storedSub) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

func (s *storedSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if max <= 0 {
		max = 1
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("natsbus: receive from %q: %w", s.subject, driver.ErrClosed)
	default:
	}
	if err := s.inflight.acquire(ctx, s.done); err != nil {
		return nil, fmt.Errorf("natsbus: receive from %q: %w", s.subject, err)
	}
	var first jetstream.Msg
	select {
	case first = <-s.msgs:
	case <-ctx.Done():
		s.inflight.release(1)
		return nil, ctx.Err()
	case <-s.done:
		s.inflight.release(1)
		return nil, fmt.Errorf("natsbus: receive from %q: %w", s.subject, driver.ErrClosed)
	case <-s.failed:
		s.inflight.release(1)
		return nil, fmt.Errorf("natsbus: receive from %q: %w: %w", s.subject, driver.ErrUnavailable, s.failErr)
	}
	n := min(max, len(s.msgs)+1)
	out := make([]*driver.Delivery, 0, n)
	slab := make([]storedSlot, n)
	out = append(out, slab[0].delivery(first))
	for len(out) < max && s.inflight.tryAcquire() {
		select {
		case m := <-s.msgs:
			var slot *storedSlot
			if i := len(out); i < len(slab) {
				slot = &slab[i]
			} else {
				slot = new(storedSlot)
			}
			out = append(out, slot.delivery(m))
			continue
		default:
			s.inflight.release(1)
		}
		break
	}
	return out, nil
}

// storedSlot holds one delivery and its message, allocated together and for
// a whole batch at once: two allocations per batch instead of per message.
type storedSlot struct {
	dl  driver.Delivery
	msg driver.Message
}

func (sl *storedSlot) delivery(m jetstream.Msg) *driver.Delivery {
	sl.dl = driver.Delivery{Message: &sl.msg, Attempt: numDelivered(m.Reply()), Err: decodeInto(&sl.msg, m.Headers(), m.Data()), Handle: m}
	return &sl.dl
}

// numDelivered reads the delivery count from the ack subject, which the
// server formats as $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...
// (9 tokens) or, since 2.9, with a domain and an account hash after
// "$JS.ACK." (at least 11 tokens), without Metadata's allocation.
func numDelivered(reply string) int {
	const prefix = "$JS.ACK."
	if !strings.HasPrefix(reply, prefix) {
		return 1
	}
	rest := reply[len(prefix):]
	skip := 2 // stream, consumer
	switch tokens := strings.Count(reply, ".") + 1; {
	case tokens == 9:
	case tokens >= 11:
		skip = 4 // domain, account hash, stream, consumer
	default:
		return 1
	}
	for range skip {
		_, rest, _ = strings.Cut(rest, ".")
	}
	tok, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(tok)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// settle applies fn to the JetStream message of every delivery and frees
// their in-flight slots. Acks are fire-and-forget publishes that the client
// flushes in the background, batched with the pull requests. A message is
// settled once: one that close gave back, or that was settled before, is
// skipped.
func (s *storedSub) settle(op string, ds []*driver.Delivery, fn func(jetstream.Msg) error) error {
	select {
	case <-s.done:
		return fmt.Errorf("natsbus: %s on %q: %w", op, s.subject, driver.ErrClosed)
	default:
	}
	var errs []error
	var buf [32]jetstream.Msg
	ms := buf[:0]
	s.heldMu.Lock()
	for _, dl := range ds {
		m, ok := dl.Handle.(jetstream.Msg)
		if !ok {
			errs = append(errs, fmt.Errorf("natsbus: %s on %q: delivery not received from natsbus JetStream", op, s.subject))
			continue
		}
		if _, held := s.held[m]; held {
			delete(s.held, m)
			ms = append(ms, m)
		}
	}
	s.heldMu.Unlock()
	for _, m := range ms {
		if err := fn(m); err != nil {
			errs = append(errs, fmt.Errorf("natsbus: %s on %q: %w", op, s.subject, s.d.classify(err)))
		}
	}
	n := len(ms)
	s.inflight.release(n)
	return errors.Join(errs...)
}

func (s *storedSub) Ack(_ context.Context, ds []*driver.Delivery) error {
	return s.settle("ack", ds, jetstream.Msg.Ack)
}

func (s *storedSub) Nack(_ context.Context, ds []*driver.Delivery, delay time.Duration) error {
	if delay <= 0 {
		return s.settle("nack", ds, jetstream.Msg.Nak)
	}
	return s.settle("nack", ds, func(m jetstream.Msg) error { return m.NakWithDelay(delay) })
}

func (s *storedSub) Term(_ context.Context, ds []*driver.Delivery) error {
	return s.settle("term", ds, jetstream.Msg.Term)
}

func (s *storedSub) Close(ctx context.Context) error {
	err := s.close(ctx)
	s.d.forget(s)
	return err
}

// close stops pulling, waits (within ctx) for the consume loop to end, and
// gives every message it holds back to the server at once: those pulled but
// never handed out, and those handed out but not settled. Draining the
// consume loop, rather than stopping it, passes the messages the client had
// already received to handle, which gives them back too; a stopped loop
// would drop them, and the server would redeliver them only after the ack
// wait.
func (s *storedSub) close(ctx context.Context) error {
	err := fmt.Errorf("natsbus: close %q: %w", s.subject, driver.ErrClosed)
	s.closeOnce.Do(func() {
		err = nil
		close(s.done)
		if s.d.nc.IsConnected() {
			s.cc.Drain()
		} else {
			// Nothing can be given back, and a drain would wait for the
			// connection.
			s.cc.Stop()
		}
		select {
		case <-s.cc.Closed():
		case <-ctx.Done():
			err = fmt.Errorf("natsbus: close %q: %w", s.subject, ctx.Err())
		}
		<-s.keeperEnd
		s.heldMu.Lock()
		s.closing = true
		held := s.held
		s.held = nil
		s.heldMu.Unlock()
		for m := range held {
			_ = m.Nak()
		}
		if s.ephemeral && s.d.nc.IsConnected() {
			// A private subscription is gone when closed; the server would
			// drop its consumer after inactiveThreshold anyway.
			if derr := s.d.js.DeleteConsumer(ctx, s.stream, s.consumer); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
				s.d.opts.Logger.Warn("natsbus: delete consumer", "consumer", s.consumer, "err", derr)
			}
		}
	})
	return err
}

// coreSub is a core NATS subscription (a queue subscription for a group).
// Nothing is stored: settling is a no-op and nothing is redelivered.
type coreSub struct {
	d        *Driver
	subject  string
	sub      *nats.Subscription
	inflight limiter

	closeOnce sync.Once
	done      chan struct{}
}

func (d *Driver) subscribeCore(ctx context.Context, subj string, opts driver.SubscribeOptions) (*coreSub, error) {
	var sub *nats.Subscription
	var err error
	if opts.Group == "" {
		sub, err = d.nc.SubscribeSync(subj)
	} else {
		sub, err = d.nc.QueueSubscribeSync(subj, opts.Group)
	}
	if err != nil {
		return nil, d.classify(err)
	}
	// Established means the server has it: later publishes reach it.
	if err := d.flush(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return &coreSub{d: d, subject: subj, sub: sub, inflight: newLimiter(opts.MaxInFlight), done: make(chan struct{})}, nil
}

func (s *coreSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if max <= 0 {
		max = 1
	}
	closed := func() error { return fmt.Errorf("natsbus: receive from %q: %w", s.subject, driver.ErrClosed) }
	select {
	case <-s.done:
		return nil, closed()
	default:
	}
	if err := s.inflight.acquire(ctx, s.done); err != nil {
		return nil, fmt.Errorf("natsbus: receive from %q: %w", s.subject, err)
	}
	m, err := s.sub.NextMsgWithContext(ctx)
	if err != nil {
		s.inflight.release(1)
		select {
		case <-s.done:
			return nil, closed()
		default:
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("natsbus: receive from %q: %w", s.subject, s.d.classify(err))
	}
	out := []*driver.Delivery{coreDelivery(m)}
	for len(out) < max && s.inflight.tryAcquire() {
		// NextMsg parks on a timer when nothing is queued, even with a zero
		// timeout: take only what is already there.
		var m *nats.Msg
		n, _, err := s.sub.Pending()
		if err == nil && n > 0 {
			m, err = s.sub.NextMsg(0)
		}
		if err != nil || m == nil {
			s.inflight.release(1)
			break
		}
		out = append(out, coreDelivery(m))
	}
	return out, nil
}

func coreDelivery(m *nats.Msg) *driver.Delivery {
	msg, err := decode(m.Header, m.Data)
	return &driver.Delivery{Message: msg, Attempt: 1, Err: err, Handle: m}
}

func (s *coreSub) settle(ds []*driver.Delivery) error {
	select {
	case <-s.done:
		return fmt.Errorf("natsbus: settle on %q: %w", s.subject, driver.ErrClosed)
	default:
	}
	s.inflight.release(len(ds))
	return nil
}

func (s *coreSub) Ack(_ context.Context, ds []*driver.Delivery) error { return s.settle(ds) }

// Nack cannot redeliver: core NATS keeps nothing.
func (s *coreSub) Nack(_ context.Context, ds []*driver.Delivery, _ time.Duration) error {
	return s.settle(ds)
}

func (s *coreSub) Term(_ context.Context, ds []*driver.Delivery) error { return s.settle(ds) }

func (s *coreSub) Close(ctx context.Context) error {
	err := s.close(ctx)
	s.d.forget(s)
	return err
}

func (s *coreSub) close(context.Context) error {
	err := fmt.Errorf("natsbus: close %q: %w", s.subject, driver.ErrClosed)
	s.closeOnce.Do(func() {
		err = nil
		close(s.done)
		if uerr := s.sub.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) && !errors.Is(uerr, nats.ErrBadSubscription) {
			err = fmt.Errorf("natsbus: close %q: %w", s.subject, uerr)
		}
	})
	return err
}

// checkGroup refuses a group name that would widen or break the consumer
// name and queue group made from it.
func checkGroup(group string) error {
	if strings.ContainsFunc(group, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '*' || r == '>' }) {
		return fmt.Errorf("group %q contains whitespace or a wildcard", group)
	}
	return nil
}
