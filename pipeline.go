package eventbus

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// PublisherOptions configures a Publisher. The zero value is valid: every
// field has a documented default.
type PublisherOptions struct {
	// Window bounds the messages accepted and not yet settled (confirmed or
	// failed). A publish waits for room in it. Default 4096.
	Window int

	// MaxBatch bounds the messages of one batch handed to a driver.
	// Default 1024.
	MaxBatch int

	// Lanes is how many batches of one destination may be in flight at
	// once. Messages with the same Key always take the same lane. Default 4.
	Lanes int

	// SendTimeout bounds each batch's publish on the backend (a driver
	// retries transient failures within it). Default 30s.
	SendTimeout time.Duration

	// OnResult, when set, is called once for every accepted message when it
	// settles, with the error its PublishResult reports. It runs on the
	// Publisher's goroutine (for an at-most-once write, on the publishing
	// caller's, before the publish returns): it must not block, nor
	// publish on the same Publisher.
	OnResult func(m *Message, err error)
}

// Publisher publishes without waiting for each confirmation: the pipelined
// counterpart of the Bus's publish methods, for callers that hand over many
// messages, as nats.go's PublishAsync and franz-go's promise-based Produce
// do.
//
// Each publish method checks the message, waits for room in the window
// (Options.Window) and returns a *PublishResult at once. Messages that
// concurrent callers publish to the same destination are sent to the
// backend together, in batches, with several batches in flight
// (Options.Lanes): the backend's batch publish then pipelines them.
//
// Guarantees:
//
//   - Nothing is reported published before the backend confirmed it, as
//     for Bus.PublishEvent — except on a destination whose route asks for
//     AtMostOnce from a driver that can write without confirmation: the
//     publish method writes the message to the driver's connection itself,
//     without batching, and returns a result already settled that reports
//     that the message was written.
//   - Every accepted message gets exactly one outcome: nil, or an error
//     that says why (errors.Is works with ErrTooLarge, ErrInvalid,
//     ErrClosed, ErrDuplicate... as for PublishEvent). A message the
//     backend refuses before the wire fails alone; when a batch fails on
//     the backend, each of its messages reports that error, though some
//     may have been stored (at-least-once, as with PublishStream).
//   - Messages with the same Key to the same destination are sent in the
//     order they were published; messages without a Key may be reordered.
//   - Flush waits for every message accepted before it; Close stops
//     intake and waits for every outstanding message.
//
// With content routes, route pipelines or schemas (see Route), messages are
// published one at a time, each with its own result.
//
// A message must not be modified until its result is done. All methods are
// safe for concurrent use.
type Publisher struct {
	b           *Bus
	window      chan struct{} // one token per accepted, unsettled message
	maxBatch    int
	lanes       int
	sendTimeout time.Duration
	onResult    func(*Message, error)
	seed        maphash.Seed

	ctx    context.Context // ends the sends when Close's context ends
	cancel context.CancelFunc
	done   chan struct{} // closed when Close begins

	mu      sync.RWMutex // held for reading while accepting, for writing to close
	closed  bool
	dests   sync.Map // destination name → *pipeDest
	senders sync.WaitGroup
	next    atomic.Uint32 // lane of the next message without a key

	settleMu sync.Mutex
	changed  chan struct{} // closed and replaced when a batch settles
	failed   int           // since the last Flush
	firstErr error
}

// NewPublisher returns a Publisher on b (opts nil: defaults). It may be
// made before Start; its publishes fail with ErrNotStarted until then.
func (b *Bus) NewPublisher(opts *PublisherOptions) *Publisher {
	var o PublisherOptions
	if opts != nil {
		o = *opts
	}
	if o.Window <= 0 {
		o.Window = 4096
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	o.MaxBatch = min(o.MaxBatch, o.Window)
	if o.Lanes <= 0 {
		o.Lanes = 4
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 30 * time.Second
	}
	p := &Publisher{
		b:           b,
		window:      make(chan struct{}, o.Window),
		maxBatch:    o.MaxBatch,
		lanes:       o.Lanes,
		sendTimeout: o.SendTimeout,
		onResult:    o.OnResult,
		seed:        maphash.MakeSeed(),
		done:        make(chan struct{}),
		changed:     make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// PublishResult is the outcome of one message handed to a Publisher.
type PublishResult struct {
	// Message is the message published.
	Message *Message

	done <-chan struct{} // shared by the messages of a batch
	err  error           // set before done is closed
}

// Done is closed when the message is settled: confirmed or failed.
func (r *PublishResult) Done() <-chan struct{} { return r.done }

// Err waits until the message is settled and returns nil when the backend
// confirmed it, else why it failed.
func (r *PublishResult) Err() error {
	<-r.done
	return r.err
}

// Wait is Err bounded by ctx: it returns ctx.Err() when ctx ends first,
// which does not cancel the publish.
func (r *PublishResult) Wait(ctx context.Context) error {
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var settledNow = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func failedResult(m *Message, err error) *PublishResult {
	return &PublishResult{Message: m, done: settledNow, err: err}
}

// PublishEvent publishes m (m.Type required) to events.<type>, as
// Bus.PublishEvent does, without waiting for the confirmation. ctx bounds
// the wait for room in the window (a done ctx refuses the message); once
// accepted, the message is sent whatever becomes of ctx.
func (p *Publisher) PublishEvent(ctx context.Context, m *Message) *PublishResult {
	if err := checkMessage(m); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish event: %w", err))
	}
	return p.publish(ctx, p.b.destination(driver.Event, m.Type, ""), m)
}

// SendCommand sends m (m.Type required) to commands.<service>.<type>, as
// Bus.SendCommand does, without waiting for the confirmation.
func (p *Publisher) SendCommand(ctx context.Context, service string, m *Message) *PublishResult {
	if err := validateToken("service", service); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: send command: %w", err))
	}
	if err := checkMessage(m); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: send command: %w", err))
	}
	return p.publish(ctx, p.b.destination(driver.Command, service, m.Type), m)
}

// Broadcast publishes m (m.Type required) to broadcast.<type>, as
// Bus.Broadcast does, without waiting for the confirmation.
func (p *Publisher) Broadcast(ctx context.Context, m *Message) *PublishResult {
	if err := checkMessage(m); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: broadcast: %w", err))
	}
	return p.publish(ctx, p.b.destination(driver.Broadcast, m.Type, ""), m)
}

// PublishStream appends m (m.Type required) to streams.<stream>, as
// Bus.PublishStream does, without waiting for the confirmation.
func (p *Publisher) PublishStream(ctx context.Context, stream string, m *Message) *PublishResult {
	if err := validateType("stream", stream); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish stream: %w", err))
	}
	if err := checkMessage(m); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish stream %s: %w", stream, err))
	}
	return p.publish(ctx, p.b.destination(driver.Stream, stream, ""), m)
}

// fail settles m at once with err, counted for Flush and reported to
// OnResult.
func (p *Publisher) fail(m *Message, err error) *PublishResult {
	p.settleMu.Lock()
	p.recordFailure(err)
	p.settleMu.Unlock()
	if p.onResult != nil {
		p.onResult(m, err)
	}
	return failedResult(m, err)
}

func (p *Publisher) recordFailure(err error) {
	if p.failed++; p.firstErr == nil {
		p.firstErr = err
	}
}

// pipeDest is the pipeline of one destination.
type pipeDest struct {
	dest     driver.Destination
	be       *backend // nil: published through publishContent
	fast     driver.UnconfirmedPublisher
	lanes    []*lane
	screened bool
}

// lane sends its destination's batches one at a time, in order.
type lane struct {
	mu       sync.Mutex
	queue    []*pipeBatch // the last one is open while shorter than maxBatch
	running  bool         // a sender goroutine owns the lane
	accepted uint64       // messages queued so far
	settled  uint64       // messages settled so far (a prefix: batches settle in order)
}

type pipeBatch struct {
	msgs    []*Message
	results []*PublishResult
	done    chan struct{}
}

func (p *Publisher) publish(ctx context.Context, dest driver.Destination, m *Message) *PublishResult {
	b := p.b
	pd, err := p.destFor(dest)
	if err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, err))
	}
	b.fill(m)
	// A Publisher that is closing, or a context already done, refuses at
	// once, even with room in the window.
	select {
	case <-p.done:
		return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, ErrClosed))
	default:
	}
	if err := ctx.Err(); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, err))
	}
	if pd.fast != nil {
		return p.write(ctx, pd, m)
	}
	// Room in the window is the common case: take it without the
	// three-way select, which locks every channel it waits on.
	select {
	case p.window <- struct{}{}:
	default:
		select {
		case p.window <- struct{}{}:
		case <-p.done:
			return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, ErrClosed))
		case <-ctx.Done():
			return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, ctx.Err()))
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		<-p.window
		return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", dest.Name, ErrClosed))
	}
	var i int
	if m.Key != "" {
		i = int(maphash.String(p.seed, m.Key) % uint64(len(pd.lanes)))
	} else {
		i = int(p.next.Add(1) % uint32(len(pd.lanes)))
	}
	l := pd.lanes[i]
	r := &PublishResult{Message: m}
	l.mu.Lock()
	var bt *pipeBatch
	if n := len(l.queue); n > 0 && len(l.queue[n-1].msgs) < p.maxBatch {
		bt = l.queue[n-1]
	} else {
		bt = &pipeBatch{done: make(chan struct{})}
		l.queue = append(l.queue, bt)
	}
	bt.msgs = append(bt.msgs, m)
	bt.results = append(bt.results, r)
	r.done = bt.done
	l.accepted++
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if start {
		p.senders.Add(1)
		go p.run(pd, l)
	}
	return r
}

// write is publish for an at-most-once destination: the message is
// written to the driver's connection at once, on the caller's goroutine,
// with no window, batch or hand-off (the write does not wait for the
// broker), and its result is settled when write returns.
func (p *Publisher) write(ctx context.Context, pd *pipeDest, m *Message) *PublishResult {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return p.fail(m, fmt.Errorf("eventbus: publish %s: %w", pd.dest.Name, ErrClosed))
	}
	one := [1]*Message{m}
	if err := pd.fast.PublishUnconfirmed(ctx, pd.dest, one[:]); err != nil {
		return p.fail(m, fmt.Errorf("eventbus: publish %s via %s: %w", pd.dest.Name, pd.be.name, err))
	}
	if p.onResult != nil {
		p.onResult(m, nil)
	}
	return &PublishResult{Message: m, done: settledNow}
}

// destFor returns the pipeline of dest, made at its first publish.
func (p *Publisher) destFor(dest driver.Destination) (*pipeDest, error) {
	if v, ok := p.dests.Load(dest.Name); ok {
		return v.(*pipeDest), nil
	}
	b := p.b
	if b.closed.Load() {
		return nil, ErrClosed
	}
	rt := b.routes.Load()
	if rt == nil {
		return nil, ErrNotStarted
	}
	pd := &pipeDest{dest: dest, lanes: make([]*lane, p.lanes)}
	for i := range pd.lanes {
		pd.lanes[i] = &lane{}
	}
	if b.screensPublish() {
		pd.screened = true
	} else {
		be, err := rt.resolve(dest)
		if err != nil {
			return nil, err
		}
		pd.be = be
		if deliveryOf(rt, dest) == AtMostOnce {
			pd.fast, _ = be.drv.(driver.UnconfirmedPublisher)
		}
	}
	v, _ := p.dests.LoadOrStore(dest.Name, pd)
	return v.(*pipeDest), nil
}

// run sends l's batches until none is left.
func (p *Publisher) run(pd *pipeDest, l *lane) {
	defer p.senders.Done()
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		bt := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()
		p.send(pd, bt)
		p.settled(l, bt)
	}
}

// send publishes bt and records each message's outcome in its result.
func (p *Publisher) send(pd *pipeDest, bt *pipeBatch) {
	ctx, cancel := context.WithTimeout(p.ctx, p.sendTimeout)
	defer cancel()
	b := p.b
	if pd.screened {
		for i := range bt.msgs {
			bt.results[i].err = b.publishContent(ctx, pd.dest, bt.msgs[i:i+1])
		}
		return
	}
	msgs, results := bt.msgs, bt.results
	err := p.sendOnce(ctx, pd, msgs)
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
		// The driver refused the batch before the wire (its contract), for
		// one message or more: those fail alone, the others are sent again.
		// Checking here rather than per publish keeps the check off the
		// path of the batches that pass.
		msgs, results = nil, nil
		for i, m := range bt.msgs {
			one := bt.msgs[i : i+1]
			cerr := driver.CheckEnvelope(one)
			if cerr == nil {
				cerr = driver.CheckSize(one, pd.be.caps.MaxMessageSize)
			}
			if cerr != nil {
				bt.results[i].err = fmt.Errorf("eventbus: publish %s via %s: %w", pd.dest.Name, pd.be.name, cerr)
				continue
			}
			msgs, results = append(msgs, m), append(results, bt.results[i])
		}
		err = nil
		if len(msgs) > 0 {
			err = p.sendOnce(ctx, pd, msgs)
		}
	}
	if err != nil {
		err = fmt.Errorf("eventbus: publish %s via %s: %w", pd.dest.Name, pd.be.name, err)
		for _, r := range results {
			r.err = err
		}
	}
}

func (p *Publisher) sendOnce(ctx context.Context, pd *pipeDest, msgs []*Message) error {
	if pd.fast != nil {
		return pd.fast.PublishUnconfirmed(ctx, pd.dest, msgs)
	}
	return p.b.send(ctx, pd.be, pd.dest, msgs)
}

// settled completes bt's results, frees their room in the window, reports
// them to OnResult and counts their failures, and only then counts them
// settled on l and wakes Flush: a Flush that returns has seen every
// failure, and every OnResult call, of what it waited for.
func (p *Publisher) settled(l *lane, bt *pipeBatch) {
	close(bt.done)
	for range bt.msgs {
		<-p.window
	}
	if p.onResult != nil {
		for _, r := range bt.results {
			p.onResult(r.Message, r.err)
		}
	}
	p.settleMu.Lock()
	for _, r := range bt.results {
		if r.err != nil {
			p.recordFailure(r.err)
		}
	}
	p.settleMu.Unlock()
	l.mu.Lock()
	l.settled += uint64(len(bt.msgs))
	l.mu.Unlock()
	p.settleMu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.settleMu.Unlock()
}

// Flush waits until every message accepted before the call is settled. It
// returns an error when ctx ends first, or when publishes failed since the
// previous Flush returned: how many, and the first error (errors.Is and As
// see it).
func (p *Publisher) Flush(ctx context.Context) error {
	type mark struct {
		l    *lane
		upto uint64
	}
	var marks []mark
	p.dests.Range(func(_, v any) bool {
		for _, l := range v.(*pipeDest).lanes {
			l.mu.Lock()
			if l.settled < l.accepted {
				marks = append(marks, mark{l, l.accepted})
			}
			l.mu.Unlock()
		}
		return true
	})
	for len(marks) > 0 {
		p.settleMu.Lock()
		changed := p.changed
		p.settleMu.Unlock()
		kept := marks[:0]
		for _, mk := range marks {
			mk.l.mu.Lock()
			if mk.l.settled < mk.upto {
				kept = append(kept, mk)
			}
			mk.l.mu.Unlock()
		}
		if marks = kept; len(marks) == 0 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("eventbus: flush: %w", ctx.Err())
		}
	}
	return p.failures("flush")
}

// failures reports, and forgets, the publishes that failed since the last
// call.
func (p *Publisher) failures(op string) error {
	p.settleMu.Lock()
	n, first := p.failed, p.firstErr
	p.failed, p.firstErr = 0, nil
	p.settleMu.Unlock()
	if n > 0 {
		return &failuresError{op: op, n: n, first: first}
	}
	return nil
}

// failuresError counts the failed publishes that Flush or Close reports and
// unwraps to the first one's error. That error is one of the bus's own,
// complete with its "eventbus: " prefix, as PublishResult.Err returns it:
// the count is said after that prefix, so that the prefix appears once.
type failuresError struct {
	op    string
	n     int
	first error
}

func (e *failuresError) Error() string {
	first := strings.TrimPrefix(e.first.Error(), "eventbus: ")
	if e.n == 1 {
		return fmt.Sprintf("eventbus: %s: 1 publish failed: %s", e.op, first)
	}
	return fmt.Sprintf("eventbus: %s: %d publishes failed, the first: %s", e.op, e.n, first)
}

func (e *failuresError) Unwrap() error { return e.first }

// Close stops intake (publishes then fail with ErrClosed) and waits until
// every accepted message is settled and the Publisher's goroutines ended.
// When ctx ends first, the publishes still in flight are cancelled (their
// results report it) and Close returns ctx's error once they are settled.
// Like Flush, it reports the publishes that failed since the last Flush.
// Close does not close the Bus; Bus.Close makes the Publisher's remaining
// publishes fail with ErrClosed.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		p.senders.Wait()
		close(ended)
	}()
	var err error
	select {
	case <-ended:
	case <-ctx.Done():
		p.cancel()
		<-ended
		err = fmt.Errorf("eventbus: close publisher: %w", ctx.Err())
	}
	p.cancel()
	return errors.Join(err, p.failures("close publisher"))
}
