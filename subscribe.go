package eventbus

import (
	"fmt"
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
}

// WithConcurrency runs up to n handler calls of the subscription at once.
// Messages with the same Key still run one at a time, in order. Default 1.
func WithConcurrency(n int) SubscribeOption {
	return func(o *subscribeOptions) { o.concurrency = max(n, 1) }
}

// WithStartFirst makes a new group start with every message the backend still
// retains, instead of only new ones. It needs a Durable backend.
func WithStartFirst() SubscribeOption {
	return func(o *subscribeOptions) { o.startAt = driver.StartFirst }
}

// WithMaxInFlight bounds the messages fetched and not yet settled.
func WithMaxInFlight(n int) SubscribeOption {
	return func(o *subscribeOptions) { o.maxInFlight = n }
}

// WithAckWait sets how long the backend waits for a settlement before it
// redelivers; long-running handlers need more than the driver's default.
func WithAckWait(d time.Duration) SubscribeOption {
	return func(o *subscribeOptions) { o.ackWait = d }
}

type consumerKind int

const (
	kindMessage consumerKind = iota
	kindQuery
	kindBatch
	kindReply
)

// registration is a handler waiting for Start.
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
	}
}

// SubscribeEvents handles events of the given types. Subscriptions with the
// same non-empty group compete (one member handles each event) and the group
// is durable where the backend is; an empty group receives every event while
// the bus runs. Call before Start.
func (b *Bus) SubscribeEvents(types []string, group string, h Handler, opts ...SubscribeOption) error {
	if len(types) == 0 {
		return fmt.Errorf("eventbus: subscribe events: %w: no event types", ErrInvalidName)
	}
	if group != "" {
		if err := validateToken("group", group); err != nil {
			return err
		}
	}
	regs := make([]*registration, 0, len(types))
	for _, t := range types {
		if err := validateType("event type", t); err != nil {
			return err
		}
		regs = append(regs, &registration{kind: kindMessage, dest: driver.NewDestination(driver.Event, t), group: group, durable: group != "", handler: h})
	}
	return b.register(h == nil, opts, regs...)
}

// HandleCommand handles commands of type cmdType sent to service. The
// instances of a service compete: each command is handled by one of them.
// Call before Start.
func (b *Bus) HandleCommand(service, cmdType string, h Handler, opts ...SubscribeOption) error {
	if err := validateToken("service", service); err != nil {
		return err
	}
	if err := validateType("command type", cmdType); err != nil {
		return err
	}
	r := &registration{kind: kindMessage, dest: driver.NewDestination(driver.Command, service, cmdType), group: service, durable: true, handler: h}
	return b.register(h == nil, opts, r)
}

// SubscribeBroadcast handles broadcasts of the given types on this instance.
// Call before Start.
func (b *Bus) SubscribeBroadcast(types []string, h Handler, opts ...SubscribeOption) error {
	if len(types) == 0 {
		return fmt.Errorf("eventbus: subscribe broadcast: %w: no types", ErrInvalidName)
	}
	regs := make([]*registration, 0, len(types))
	for _, t := range types {
		if err := validateType("broadcast type", t); err != nil {
			return err
		}
		regs = append(regs, &registration{kind: kindMessage, dest: driver.NewDestination(driver.Broadcast, t), handler: h})
	}
	return b.register(h == nil, opts, regs...)
}

// HandleQuery answers queries of type queryType sent to service. The
// instances of a service compete. Call before Start.
func (b *Bus) HandleQuery(service, queryType string, h QueryHandler, opts ...SubscribeOption) error {
	if err := validateToken("service", service); err != nil {
		return err
	}
	if err := validateType("query type", queryType); err != nil {
		return err
	}
	r := &registration{kind: kindQuery, dest: driver.NewDestination(driver.Query, service, queryType), group: service, query: h}
	return b.register(h == nil, opts, r)
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
// redelivered when h fails. Call before Start.
func (b *Bus) ProcessStream(stream, group string, h BatchHandler, bo *BatchOptions, opts ...SubscribeOption) error {
	if err := validateType("stream", stream); err != nil {
		return err
	}
	if err := validateToken("group", group); err != nil {
		return err
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
	return b.register(h == nil, opts, r)
}

func (b *Bus) register(nilHandler bool, opts []SubscribeOption, regs ...*registration) error {
	if nilHandler {
		return fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, ErrNilHandler)
	}
	o := subscribeOptions{concurrency: 1}
	for _, opt := range opts {
		opt(&o)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed.Load():
		return fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, ErrClosed)
	case b.started:
		return fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, ErrStarted)
	}
	seen := make(map[string]bool, len(regs))
	for _, r := range regs {
		// Two private subscriptions on one bus are a mistake too: the same
		// instance would handle each message twice.
		key := r.dest.Name + "\x00" + r.group
		if b.regKeys[key] || seen[key] {
			return fmt.Errorf("eventbus: register %s (group %q): %w", r.dest.Name, r.group, ErrDuplicateHandler)
		}
		seen[key] = true
	}
	for _, r := range regs {
		r.opts = o
		if r.handler != nil {
			r.handler = chain(r.handler, b.opts.Middleware)
		}
		b.regKeys[r.dest.Name+"\x00"+r.group] = true
		b.regs = append(b.regs, r)
	}
	return nil
}
