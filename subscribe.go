package eventbus

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// SubscribeOption tunes one subscription.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	concurrency int
	startAt     driver.StartPosition
	maxInFlight int
	ackWait     time.Duration
	retry       *RetryPolicy
	content     contentOptions
}

// WithConcurrency runs up to n handler calls of the subscription at once.
// Messages with the same Key still run one at a time, in order; a slow key
// holds up only its own messages, and the other workers go on taking new
// ones. Messages waiting behind a busy key count against the subscription's
// in-flight bound (WithMaxInFlight), so a key with a backlog larger than
// that bound does hold the others up. Default 1.
func WithConcurrency(n int) SubscribeOption {
	return func(o *subscribeOptions) { o.concurrency = max(n, 1) }
}

// WithStartFirst makes a new group start with every message the backend still
// retains, instead of only new ones. It needs a Durable backend.
func WithStartFirst() SubscribeOption {
	return func(o *subscribeOptions) { o.startAt = driver.StartFirst }
}

// WithMaxInFlight bounds the messages fetched and not yet settled, on the
// backend and in the bus. Default: the backend's default, and in the bus
// max(64, 4 × concurrency).
func WithMaxInFlight(n int) SubscribeOption {
	return func(o *subscribeOptions) { o.maxInFlight = n }
}

// WithAckWait sets how long the backend waits for a settlement from a process
// that died before it redelivers. While the process lives, the backend's
// driver keeps the deadline of every message it holds from passing, so
// long-running handlers do not need a longer one.
func WithAckWait(d time.Duration) SubscribeOption {
	return func(o *subscribeOptions) { o.ackWait = d }
}

// WithRetry gives the subscription its own retry policy instead of
// Options.Retry. RetryPolicy{MaxAttempts: RetryForever} never dead-letters a
// failing message (Permanent errors still do).
func WithRetry(p RetryPolicy) SubscribeOption {
	return func(o *subscribeOptions) { o.retry = &p }
}

type consumerKind int

const (
	kindMessage consumerKind = iota
	kindQuery
	kindBatch
	kindReply
)

// registration is one destination of a subscription.
type registration struct {
	kind    consumerKind
	dest    driver.Destination
	group   string
	durable bool
	handler Handler
	query   QueryHandler
	batch   BatchHandler
	batchO  BatchOptions
	opts    subscribeOptions
	backend *backend
	sub     *Subscription
	route   regRoute
}

func (r *registration) subscribeOptions() driver.SubscribeOptions {
	inFlight := r.opts.maxInFlight
	if inFlight <= 0 && r.kind == kindBatch {
		inFlight = 2 * r.batchO.Size
	}
	return driver.SubscribeOptions{
		Group:       r.group,
		Durable:     r.durable && r.backend.caps.Durable,
		StartAt:     r.opts.startAt,
		MaxInFlight: inFlight,
		AckWait:     r.opts.ackWait,
		Select:      r.opts.content.brokerSelect(r.dest),
	}
}

func (r *registration) key() string { return r.dest.Name + "\x00" + r.group }

// SubscribeEvents handles events of the given types. Subscriptions with the
// same non-empty group compete (one member handles each event) and the group
// is durable where the backend is; an empty group receives every event while
// the subscription is open.
//
// Like every subscribe and handle method it works before and after Start.
// Before Start the subscription is validated and opened by Start; after
// Start it is validated at once (with the errors Start would report) and the
// call returns when the subscription is established on the broker, so a
// message published after it returns is delivered to it. ctx bounds that.
// The returned *Subscription closes it.
func (b *Bus) SubscribeEvents(ctx context.Context, types []string, group string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if len(types) == 0 {
		return nil, fmt.Errorf("eventbus: subscribe events: %w: no event types", ErrInvalidName)
	}
	if group != "" {
		if err := validateToken("group", group); err != nil {
			return nil, fmt.Errorf("eventbus: subscribe events: %w", err)
		}
	}
	regs := make([]*registration, 0, len(types))
	for _, t := range types {
		if err := validateType("event type", t); err != nil {
			return nil, fmt.Errorf("eventbus: subscribe events: %w", err)
		}
		regs = append(regs, &registration{kind: kindMessage, dest: driver.NewDestination(driver.Event, t), group: group, durable: group != "", handler: h})
	}
	return b.register(ctx, isNil(h), opts, regs...)
}

// HandleCommand handles commands of type cmdType sent to service. The
// instances of a service compete: each command is handled by one of them.
// See SubscribeEvents for when it may be called and what it returns.
func (b *Bus) HandleCommand(ctx context.Context, service, cmdType string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if err := validateToken("service", service); err != nil {
		return nil, fmt.Errorf("eventbus: handle command: %w", err)
	}
	if err := validateType("command type", cmdType); err != nil {
		return nil, fmt.Errorf("eventbus: handle command: %w", err)
	}
	r := &registration{kind: kindMessage, dest: driver.NewDestination(driver.Command, service, cmdType), group: service, durable: true, handler: h}
	return b.register(ctx, isNil(h), opts, r)
}

// SubscribeBroadcast handles broadcasts of the given types on this instance.
// See SubscribeEvents for when it may be called and what it returns.
func (b *Bus) SubscribeBroadcast(ctx context.Context, types []string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if len(types) == 0 {
		return nil, fmt.Errorf("eventbus: subscribe broadcast: %w: no types", ErrInvalidName)
	}
	regs := make([]*registration, 0, len(types))
	for _, t := range types {
		if err := validateType("broadcast type", t); err != nil {
			return nil, fmt.Errorf("eventbus: subscribe broadcast: %w", err)
		}
		regs = append(regs, &registration{kind: kindMessage, dest: driver.NewDestination(driver.Broadcast, t), handler: h})
	}
	return b.register(ctx, isNil(h), opts, regs...)
}

// HandleQuery answers queries of type queryType sent to service. The
// instances of a service compete. See SubscribeEvents for when it may be
// called and what it returns.
func (b *Bus) HandleQuery(ctx context.Context, service, queryType string, h QueryHandler, opts ...SubscribeOption) (*Subscription, error) {
	if err := validateToken("service", service); err != nil {
		return nil, fmt.Errorf("eventbus: handle query: %w", err)
	}
	if err := validateType("query type", queryType); err != nil {
		return nil, fmt.Errorf("eventbus: handle query: %w", err)
	}
	r := &registration{kind: kindQuery, dest: driver.NewDestination(driver.Query, service, queryType), group: service, query: h}
	return b.register(ctx, isNil(h), opts, r)
}

// BatchOptions sizes stream batches.
type BatchOptions struct {
	// Size is the largest batch. Default 100.
	Size int
	// MaxWait is how long a partial batch waits for more messages before it is
	// handled anyway. Default 1s.
	MaxWait time.Duration
}

// ProcessStream consumes streams.<stream> in batches as member of group (a
// durable consumer group: members compete, the group resumes where it
// stopped). A batch is handled when it is full, when MaxWait passed since its
// first message, and on Close; it is acknowledged only after h succeeds, and
// redelivered when h fails. See SubscribeEvents for when it may be called and
// what it returns.
func (b *Bus) ProcessStream(ctx context.Context, stream, group string, h BatchHandler, bo *BatchOptions, opts ...SubscribeOption) (*Subscription, error) {
	if err := validateType("stream", stream); err != nil {
		return nil, fmt.Errorf("eventbus: process stream: %w", err)
	}
	if err := validateToken("group", group); err != nil {
		return nil, fmt.Errorf("eventbus: process stream: %w", err)
	}
	var o BatchOptions
	if bo != nil {
		o = *bo
	}
	if o.Size <= 0 {
		o.Size = 100
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Second
	}
	r := &registration{kind: kindBatch, dest: driver.NewDestination(driver.Stream, stream), group: group, durable: true, batch: h, batchO: o}
	return b.register(ctx, isNil(h), opts, r)
}

// isNil reports whether h is nil, including a typed nil: a nil func
// (HandlerFunc(nil)) or a nil pointer, map, chan or slice implementing the
// interface, which would panic on every message.
func isNil(h any) bool {
	if h == nil {
		return true
	}
	switch v := reflect.ValueOf(h); v.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Chan, reflect.Slice, reflect.Interface:
		return v.IsNil()
	}
	return false
}

func (b *Bus) register(ctx context.Context, nilHandler bool, opts []SubscribeOption, regs ...*registration) (*Subscription, error) {
	if nilHandler {
		return nil, fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, ErrNilHandler)
	}
	o := subscribeOptions{concurrency: 1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.retry != nil {
		p := o.retry.withDefaults()
		o.retry = &p
	}
	if err := b.prepareContent(&o, regs); err != nil {
		return nil, err
	}
	s := &Subscription{bus: b, regs: regs}
	for _, r := range regs {
		r.opts = o
		r.sub = s
		if r.handler != nil {
			r.handler = chain(r.handler, b.opts.Middleware)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, ErrClosed)
	}
	seen := make(map[string]bool, len(regs))
	for _, r := range regs {
		// Two private subscriptions on one bus are a mistake too: the same
		// instance would handle each message twice.
		if b.regKeys[r.key()] || seen[r.key()] {
			return nil, fmt.Errorf("eventbus: register %s (group %q): %w", r.dest.Name, r.group, ErrDuplicateHandler)
		}
		seen[r.key()] = true
	}
	if b.started {
		if err := b.openLocked(ctx, s); err != nil {
			return nil, err
		}
	} else {
		b.regs = append(b.regs, regs...)
	}
	for _, r := range regs {
		b.regKeys[r.key()] = true
	}
	b.subs[s] = struct{}{}
	return s, nil
}

// openLocked validates and opens the registrations of s on a started bus,
// all or none. b.mu is held.
func (b *Bus) openLocked(ctx context.Context, s *Subscription) error {
	if problems := bind(b.routes.Load(), s.regs); len(problems) > 0 {
		return &ConfigError{Problems: problems}
	}
	opened := make([]*consumer, 0, len(s.regs))
	for _, r := range s.regs {
		sub, err := r.open(ctx)
		if err != nil {
			for _, c := range opened {
				_ = c.sub.Close(context.WithoutCancel(ctx))
			}
			return fmt.Errorf("eventbus: subscribe %s on %s: %w", r.dest.Name, r.backend.name, err)
		}
		opened = append(opened, newConsumer(b, r, sub))
	}
	s.consumers = opened
	for _, c := range opened {
		b.consumers.Add(1)
		go c.run()
	}
	return nil
}

// bind resolves each registration's backend through rt and checks that the
// backend can serve it; it returns every problem found.
func bind(rt *router, regs []*registration) []error {
	var problems []error
	for _, r := range regs {
		be, err := rt.resolveReg(r)
		if err == nil {
			err = checkCapabilities(be, r)
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", r.dest.Name, err))
			continue
		}
		r.backend = be
		problems = append(problems, rt.bindContent(r)...)
	}
	return problems
}

// Subscription is the handle of one subscribe or handle call: every
// destination it named, on whichever backends serve them.
type Subscription struct {
	bus  *Bus
	regs []*registration

	// consumers is set once the subscription is open (by Start, or by the
	// subscribe call on a started bus), under bus.mu.
	consumers []*consumer
	closeOnce sync.Once
	closeErr  error
}

// Destinations lists the logical destinations of the subscription.
func (s *Subscription) Destinations() []string {
	names := make([]string, len(s.regs))
	for i, r := range s.regs {
		names[i] = r.dest.Name
	}
	return names
}

// Close unsubscribes. It stops intake at once, starts no further handler,
// gives every message received but not started back to the backend (another
// member of a group receives it), lets the handlers in flight finish, settles
// them, and closes the subscription on the backend. A durable group keeps its
// position there. If ctx ends first, the handlers' contexts are cancelled and
// Close returns shortly after with an error matching ctx's, even if a handler
// ignores its context.
//
// Close before Start withdraws the registration. Closing twice returns the
// first result; the bus's Close closes every subscription still open.
func (s *Subscription) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		b := s.bus
		b.mu.Lock()
		for _, r := range s.regs {
			delete(b.regKeys, r.key())
		}
		b.regs = slices.DeleteFunc(b.regs, func(r *registration) bool { return r.sub == s })
		delete(b.subs, s)
		consumers := s.consumers
		b.mu.Unlock()
		s.closeErr = closeConsumers(ctx, consumers)
	})
	return s.closeErr
}

// DeclareEventGroup creates the durable consumer group of events of the
// given types on their backends without consuming, so that events published
// before the group's first member subscribes are kept for it. Declaring a
// group that exists changes nothing. It needs a started bus and a Durable
// backend (ErrCapability otherwise).
func (b *Bus) DeclareEventGroup(ctx context.Context, types []string, group string) error {
	if err := validateToken("group", group); err != nil {
		return fmt.Errorf("eventbus: declare event group: %w", err)
	}
	if len(types) == 0 {
		return fmt.Errorf("eventbus: declare event group %s: %w: no event types", group, ErrInvalidName)
	}
	for _, t := range types {
		if err := validateType("event type", t); err != nil {
			return fmt.Errorf("eventbus: declare event group: %w", err)
		}
		if err := b.declare(ctx, driver.NewDestination(driver.Event, t), group); err != nil {
			return err
		}
	}
	return nil
}

// DeclareCommands creates the queues of the service's commands of the given
// types without consuming, so that commands sent before the first instance
// of the service starts are kept. See DeclareEventGroup.
func (b *Bus) DeclareCommands(ctx context.Context, service string, cmdTypes ...string) error {
	if err := validateToken("service", service); err != nil {
		return fmt.Errorf("eventbus: declare commands: %w", err)
	}
	for _, t := range cmdTypes {
		if err := validateType("command type", t); err != nil {
			return fmt.Errorf("eventbus: declare commands: %w", err)
		}
		if err := b.declare(ctx, driver.NewDestination(driver.Command, service, t), service); err != nil {
			return err
		}
	}
	return nil
}

// DeclareStreamGroup creates the consumer group of a stream without
// consuming. See DeclareEventGroup.
func (b *Bus) DeclareStreamGroup(ctx context.Context, stream, group string) error {
	if err := validateType("stream", stream); err != nil {
		return fmt.Errorf("eventbus: declare stream group: %w", err)
	}
	if err := validateToken("group", group); err != nil {
		return fmt.Errorf("eventbus: declare stream group: %w", err)
	}
	return b.declare(ctx, driver.NewDestination(driver.Stream, stream), group)
}

// declare creates a durable group on dest's backend: natively where the
// driver declares groups, otherwise by opening and closing a durable
// subscription (a durable group's position outlives its members).
func (b *Bus) declare(ctx context.Context, dest driver.Destination, group string) error {
	be, err := b.backendFor(dest)
	if err != nil {
		return fmt.Errorf("eventbus: declare %s group %q: %w", dest.Name, group, err)
	}
	if !be.caps.Durable || !be.caps.ConsumerGroups {
		return fmt.Errorf("eventbus: declare %s group %q: %w: backend %q (%s) keeps no durable groups", dest.Name, group, ErrCapability, be.name, be.caps.Name)
	}
	opts := driver.SubscribeOptions{Group: group, Durable: true}
	if gd, ok := be.drv.(driver.GroupDeclarer); ok {
		err = gd.DeclareGroup(ctx, dest, opts)
	} else {
		var sub driver.Subscription
		if sub, err = be.drv.Subscribe(ctx, dest, opts); err == nil {
			err = sub.Close(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("eventbus: declare %s group %q on %s: %w", dest.Name, group, be.name, err)
	}
	return nil
}
