package natsbus

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// The pull loop's requests expire on the server after pullExpiry and ask it
// for an idle heartbeat every pullHeartbeat; a request after which nothing
// arrives for two heartbeats (lost in a reconnect, a server restart) is
// given up and the loop asks again: a stalled pull recovers in about 2 s,
// for one server heartbeat a second per idle subscription. pullRetry is the
// pause before asking again after a request failed.
const (
	pullHeartbeat = time.Second
	pullExpiry    = 10 * time.Second
	pullRetry     = 250 * time.Millisecond
)

// The bodies of the acknowledgements sent to a message's reply subject.
var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
	ackTerm     = []byte("+TERM")
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

// storedSub is a subscription on a JetStream pull consumer. Its own pull
// loop sends pull requests for at most the room left in msgs, the buffered
// channel Receive reads, and receives their messages on one inbox
// subscription: every message the server sends is taken into held the
// moment it arrives, and nothing waits anywhere the driver cannot renew it.
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
	msgs      chan *nats.Msg // written only by the pull loop
	room      chan struct{}  // signalled by Receive when it took from msgs
	inflight  limiter
	inbox     *nats.Subscription // where the server sends the pulled messages
	next      string             // the consumer's pull request subject
	stopPull  context.CancelFunc // ends the pull loop
	tick      time.Duration      // the keep-alive period, a third of the ack wait

	heldMu  sync.Mutex
	held    map[*nats.Msg]uint64
	epoch   uint64 // keep-alive ticks so far; guarded by heldMu
	closing bool   // held was given back; guarded by heldMu

	closeOnce sync.Once
	done      chan struct{} // closed by close
	keeperEnd chan struct{} // closed when the keep-alive goroutine returned
	pullEnd   chan struct{} // closed when the pull loop returned
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
		held:      make(map[*nats.Msg]uint64),
		done:      make(chan struct{}),
		keeperEnd: make(chan struct{}),
		pullEnd:   make(chan struct{}),
		room:      make(chan struct{}, 1),
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
	prefetch = max(prefetch, 1)
	s.msgs = make(chan *nats.Msg, prefetch)
	s.next = "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + s.consumer
	// Room for everything asked for, and for the heartbeats and status
	// messages between: the client drops what a full channel cannot take.
	in := make(chan *nats.Msg, 2*prefetch+64)
	s.inbox, err = d.nc.ChanSubscribe(d.nc.NewInbox(), in)
	if err != nil {
		if s.ephemeral {
			_ = d.js.DeleteConsumer(ctx, stream, s.consumer)
		}
		return nil, fmt.Errorf("consume %s: %w", s.consumer, d.classify(err))
	}
	pullCtx, stop := context.WithCancel(context.Background())
	s.stopPull = stop
	go s.pull(pullCtx, cons, in)
	go s.keepAlive()
	return s, nil
}

// pull is the subscription's intake. It asks the server for at most the
// room left in msgs, counting what it holds itself while Receive is behind
// and what open requests have yet to bring: a new request goes out as soon
// as there is room for a quarter of msgs with no request open, or for half
// of it while one is still being served, so that a fast consumer never
// waits a round trip for the next batch (as the jetstream client's
// Messages does). The requests share one inbox on one connection, and the
// server serves them in turn, so messages arrive in the server's order. A
// request that ends unfilled (expired, refused) says how many of its
// messages it will not bring; one after which nothing arrives for two
// heartbeats (lost in a reconnect, a server restart) is given up with all
// others and the loop asks again. A message that arrives is held (kept
// alive) before anything else, also one that a given-up request delivers
// late. After close stopped asking (s.done) it keeps taking what arrives
// until ctx ends, so that close gives it back.
func (s *storedSub) pull(ctx context.Context, cons jetstream.Consumer, in <-chan *nats.Msg) {
	defer close(s.pullEnd)
	threshold := max(1, cap(s.msgs)/4)
	overlap := max(1, cap(s.msgs)/2) // the room for a request while another is open
	var queue []*nats.Msg            // held, not yet in msgs
	want := 0                        // asked for by the open requests and not received
	retrying := false                // waiting pullRetry after a failed request
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var lastErr error
	failed := func(err error) {
		if lastErr == nil || lastErr.Error() != err.Error() {
			s.d.opts.Logger.Warn("natsbus: consumer error", "subject", s.subject, "consumer", s.consumer, "err", err)
		}
		lastErr = err
		want, retrying = 0, true
		timer.Reset(pullRetry)
	}
	for {
		if !retrying && !s.isClosing() {
			room := cap(s.msgs) - len(s.msgs) - len(queue) - want
			if room >= threshold && (want == 0 || room >= overlap) {
				if err := s.request(room); err != nil {
					failed(err)
				} else {
					if want == 0 {
						timer.Reset(2 * pullHeartbeat)
					}
					want += room
				}
			}
		}
		var out chan<- *nats.Msg
		var first *nats.Msg
		if len(queue) > 0 {
			out, first = s.msgs, queue[0]
		}
		select {
		case m := <-in:
			// What arrived together is taken together, and the silence
			// timer re-armed once.
			for {
				status := ""
				if len(m.Data) == 0 && m.Header != nil {
					status = m.Header.Get("Status")
				}
				switch status {
				case "": // a message
					if want > 0 {
						want--
					}
					if s.hold(m) {
						queue = append(queue, m)
					}
					lastErr = nil
				case "100": // idle heartbeat
				case "404", "408": // no messages, request expired
					want = max(0, want-unfilled(m))
				case "409":
					err := fmt.Errorf("pull request: %s", m.Header.Get("Description"))
					if strings.Contains(strings.ToLower(err.Error()), "consumer deleted") {
						s.fail(fmt.Errorf("natsbus: consumer %s on %q is gone: %w: %w", s.consumer, s.subject, jetstream.ErrConsumerDeleted, err))
						s.drain(in)
						return
					}
					failed(err)
				case "503":
					if s.consumerGone(ctx, cons) {
						s.fail(fmt.Errorf("natsbus: consumer %s on %q is gone: %w", s.consumer, s.subject, jetstream.ErrConsumerNotFound))
						s.drain(in)
						return
					}
					failed(nats.ErrNoResponders)
				default:
					failed(fmt.Errorf("pull request: status %s %s", status, m.Header.Get("Description")))
				}
				if len(in) == 0 {
					break
				}
				m = <-in
			}
			switch {
			case want > 0:
				timer.Reset(2 * pullHeartbeat)
			case !retrying:
				timer.Stop()
			}
		case out <- first:
			queue[0] = nil
			queue = queue[1:]
		case <-s.room:
		case <-timer.C:
			// A retry is due, or the open request went silent for two
			// heartbeats: ask again. Should it still be served, what it
			// brings is held all the same.
			want, retrying = 0, false
		case <-ctx.Done():
			s.drain(in)
			return
		}
		// Only this loop writes to msgs: what fits goes in without a wait.
		for len(queue) > 0 && len(s.msgs) < cap(s.msgs) {
			s.msgs <- queue[0]
			queue[0] = nil
			queue = queue[1:]
		}
	}
}

// unfilled is how many messages the request that m ends will not bring,
// from its Nats-Pending-Messages header; without one (not expected), all
// that any request asked for.
func unfilled(m *nats.Msg) int {
	n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages"))
	if err != nil || n < 0 {
		return math.MaxInt
	}
	return n
}

// drain holds whatever is left in the inbox channel, for close to give back.
func (s *storedSub) drain(in <-chan *nats.Msg) {
	for {
		select {
		case m := <-in:
			if len(m.Data) > 0 || m.Header.Get("Status") == "" {
				s.hold(m)
			}
		default:
			return
		}
	}
}

// request asks the server for up to n messages on the inbox.
func (s *storedSub) request(n int) error {
	body := fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`, n, pullExpiry.Nanoseconds(), pullHeartbeat.Nanoseconds())
	return s.d.nc.PublishRequest(s.next, s.inbox.Subject, body)
}

// hold takes m into held; once close gave back what was held, it gives m
// back at once instead, and reports false.
func (s *storedSub) hold(m *nats.Msg) bool {
	s.heldMu.Lock()
	if s.closing {
		s.heldMu.Unlock()
		_ = s.reply(m, ackNak)
		return false
	}
	s.held[m] = s.epoch
	s.heldMu.Unlock()
	return true
}

func (s *storedSub) isClosing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// consumerGone reports whether the consumer no longer exists. A pull
// request to a missing consumer has no responders, as it has while
// JetStream restarts: the server says which.
func (s *storedSub) consumerGone(ctx context.Context, cons jetstream.Consumer) bool {
	ictx, cancel := context.WithTimeout(ctx, pullExpiry)
	defer cancel()
	_, err := cons.Info(ictx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// reply sends an acknowledgement for m. Like the jetstream client's, it is a
// fire-and-forget publish.
func (s *storedSub) reply(m *nats.Msg, body []byte) error {
	if m.Reply == "" {
		return errors.New("message has no reply subject to acknowledge")
	}
	return s.d.nc.Publish(m.Reply, body)
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
	var due []*nats.Msg
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
			_ = s.reply(m, ackProgress)
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
	defer s.roomFreed()
	var first *nats.Msg
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
			out = append(out, slotAt(slab, len(out)).delivery(m))
			continue
		default:
			s.inflight.release(1)
		}
		break
	}
	return out, nil
}

// roomFreed wakes the pull loop when it waits for room in msgs.
func (s *storedSub) roomFreed() {
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// storedSlot holds one delivery and its message, allocated together and for
// a whole batch at once: two allocations per batch instead of per message
// (core NATS subscriptions use it too).
type storedSlot struct {
	dl  driver.Delivery
	msg driver.Message
}

func (sl *storedSlot) delivery(m *nats.Msg) *driver.Delivery {
	sl.dl = driver.Delivery{Message: &sl.msg, Attempt: numDelivered(m.Reply), Err: decodeInto(&sl.msg, m.Header, m.Data), Handle: m}
	return &sl.dl
}

// slotAt returns slab's i-th slot, or a new one past its end.
func slotAt(slab []storedSlot, i int) *storedSlot {
	if i < len(slab) {
		return &slab[i]
	}
	return new(storedSlot)
}

// coreDelivery is delivery for a core NATS message: always a first
// attempt, whatever its reply subject.
func (sl *storedSlot) coreDelivery(m *nats.Msg) *driver.Delivery {
	sl.dl = driver.Delivery{Message: &sl.msg, Attempt: 1, Err: decodeInto(&sl.msg, m.Header, m.Data), Handle: m}
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
func (s *storedSub) settle(op string, ds []*driver.Delivery, body []byte) error {
	select {
	case <-s.done:
		return fmt.Errorf("natsbus: %s on %q: %w", op, s.subject, driver.ErrClosed)
	default:
	}
	var errs []error
	var buf [32]*nats.Msg
	ms := buf[:0]
	s.heldMu.Lock()
	for _, dl := range ds {
		m, ok := dl.Handle.(*nats.Msg)
		if !ok || m == nil || !strings.HasPrefix(m.Reply, "$JS.ACK.") {
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
		if err := s.reply(m, body); err != nil {
			errs = append(errs, fmt.Errorf("natsbus: %s on %q: %w", op, s.subject, s.d.classify(err)))
		}
	}
	n := len(ms)
	s.inflight.release(n)
	return errors.Join(errs...)
}

func (s *storedSub) Ack(_ context.Context, ds []*driver.Delivery) error {
	return s.settle("ack", ds, ackAck)
}

func (s *storedSub) Nack(_ context.Context, ds []*driver.Delivery, delay time.Duration) error {
	if delay <= 0 {
		return s.settle("nack", ds, ackNak)
	}
	return s.settle("nack", ds, fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds()))
}

func (s *storedSub) Term(_ context.Context, ds []*driver.Delivery) error {
	return s.settle("term", ds, ackTerm)
}

func (s *storedSub) Close(ctx context.Context) error {
	err := s.close(ctx)
	s.d.forget(s)
	return err
}

// close stops pulling, waits (within ctx) for the pull loop to end, and
// gives every message it holds back to the server at once: those pulled but
// never handed out, and those handed out but not settled. Draining the inbox
// subscription, rather than dropping it, lets every message the server sent
// before it heard of the unsubscription reach the pull loop, which holds it
// and so gives it back too; a dropped one would return only after the ack
// wait.
func (s *storedSub) close(ctx context.Context) error {
	err := fmt.Errorf("natsbus: close %q: %w", s.subject, driver.ErrClosed)
	s.closeOnce.Do(func() {
		err = nil
		close(s.done)
		if s.d.nc.IsConnected() && s.inbox.Drain() == nil {
			if werr := waitInvalid(ctx, s.inbox); werr != nil {
				err = fmt.Errorf("natsbus: close %q: %w", s.subject, werr)
			}
		} else {
			// Nothing can be given back, and a drain would wait for the
			// connection.
			_ = s.inbox.Unsubscribe()
		}
		s.stopPull()
		<-s.pullEnd
		<-s.keeperEnd
		s.heldMu.Lock()
		s.closing = true
		held := s.held
		s.held = nil
		s.heldMu.Unlock()
		for m := range held {
			_ = s.reply(m, ackNak)
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

// waitInvalid waits, within ctx, for a draining subscription to be done.
func waitInvalid(ctx context.Context, sub *nats.Subscription) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for sub.IsValid() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
	// The deliveries of what is queued now share one allocation.
	queued := 1
	if p, _, err := s.sub.Pending(); err == nil && p > 0 {
		queued += min(max-1, p)
	}
	slab := make([]storedSlot, queued)
	out := make([]*driver.Delivery, 0, queued)
	out = append(out, slab[0].coreDelivery(m))
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
		out = append(out, slotAt(slab, len(out)).coreDelivery(m))
	}
	return out, nil
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
