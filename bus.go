package eventbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// Options configures a Bus. The zero value is valid: every field has a
// documented default.
type Options struct {
	// Source is the CloudEvents source of messages this bus publishes, usually
	// the service's name or URI. Default "eventbus".
	Source string

	// Instance identifies this bus instance among the instances of a service:
	// it names the reply destination of queries. Default: random.
	Instance string

	// Codec encodes typed payloads. Default JSON. Codecs lists further codecs
	// that typed handlers may decode with, chosen by datacontenttype.
	Codec  Codec
	Codecs []Codec

	// Routes map patterns and destinations to backends, first match wins.
	Routes []Route

	// DefaultBackend serves what no route decides and the selection matrix
	// does not place. Default: the first registered backend that can.
	DefaultBackend string

	// Middleware wraps every message handler (not query or batch handlers),
	// the first element outermost. Panics are always recovered by the bus.
	Middleware []Middleware

	// Retry is the redelivery policy for failed handlers.
	Retry RetryPolicy

	// QueryTimeout bounds a query whose context has no deadline. Default 30s.
	QueryTimeout time.Duration

	// Logger receives operational logs. nil discards them.
	Logger *slog.Logger

	// Observer receives the bus's telemetry hooks (package telemetry
	// implements it with OpenTelemetry). nil costs nothing.
	Observer Observer

	// Schemas, when set, checks the data of every message published
	// (except queries) and consumed against its JSON Schema; see Schemas.
	Schemas *Schemas
}

// RetryPolicy says how often and how fast a failed message is redelivered
// before it is dead-lettered. Options.Retry sets it for the bus, WithRetry
// for one subscription. A handler error always counts an attempt; an error
// marked Permanent dead-letters at once, whatever the policy.
type RetryPolicy struct {
	// MaxAttempts counts deliveries, the first included. Default 5.
	// RetryForever (or any negative value) redelivers a failing message
	// until it succeeds and never dead-letters it.
	MaxAttempts int
	// InitialBackoff is the delay before the second attempt. Default 100ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponentially growing delay. Default 30s.
	MaxBackoff time.Duration
}

// RetryForever is the RetryPolicy.MaxAttempts that never gives up.
const RetryForever = -1

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 5
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = 100 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 30 * time.Second
	}
	return p
}

// exhausted reports whether a message that failed on its attempt-th delivery
// is to be dead-lettered.
func (p RetryPolicy) exhausted(attempt int) bool {
	return p.MaxAttempts > 0 && attempt >= p.MaxAttempts
}

// backoff is the delay before attempt+1, exponential with ±25% jitter.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	var b [1]byte
	_, _ = rand.Read(b[:])
	jitter := time.Duration(int64(d) / 4 * (int64(b[0]) - 128) / 128)
	return d + jitter
}

// Bus is the one API of every messaging pattern over one or more backends.
//
// Use it in three phases: New, then Register backends and register handlers,
// then Start; publish and query once started; Close drains and releases
// everything. All methods are safe for concurrent use. The Bus owns the
// drivers registered with it and closes them on Close.
type Bus struct {
	opts    Options
	source  string
	retry   RetryPolicy
	codecs  *codecs
	log     *slog.Logger
	idBase  string
	idSeq   atomic.Uint64
	replyTo string

	mu       sync.Mutex
	backends []*backend
	byName   map[string]*backend
	regs     []*registration // registered before Start
	regKeys  map[string]bool
	subs     map[*Subscription]struct{}
	started  bool
	closed   atomic.Bool

	routes atomic.Pointer[router]

	intake    context.Context // cancelled when Close begins: stop receiving
	stopIntk  context.CancelFunc
	work      context.Context // cancelled when Close's deadline passes: stop handlers
	stopWork  context.CancelFunc
	consumers sync.WaitGroup
	replies   []*consumer // generic reply subscriptions, one per backend that needs one
	stats     counters

	pending sync.Map // request id → chan *Message, for the generic query fallback

	destMu sync.RWMutex
	dests  map[destKey]driver.Destination
}

type backend struct {
	name   string
	drv    driver.Driver
	caps   driver.Capabilities
	rr     driver.RequestReplier // nil unless native request/reply
	replyS *consumer             // generic reply subscription, when needed
}

// New returns a bus configured by opts (nil means defaults). It does no I/O.
func New(opts *Options) *Bus {
	var o Options
	if opts != nil {
		o = *opts
	}
	b := &Bus{
		opts:    o,
		source:  o.Source,
		retry:   o.Retry.withDefaults(),
		codecs:  newCodecs(o.Codec, o.Codecs),
		log:     o.Logger,
		byName:  map[string]*backend{},
		regKeys: map[string]bool{},
		subs:    map[*Subscription]struct{}{},
		dests:   map[destKey]driver.Destination{},
	}
	if b.source == "" {
		b.source = "eventbus"
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.opts.QueryTimeout <= 0 {
		b.opts.QueryTimeout = 30 * time.Second
	}
	var rnd [9]byte
	_, _ = rand.Read(rnd[:])
	b.idBase = hex.EncodeToString(rnd[:]) + "-"
	instance := o.Instance
	if instance == "" {
		instance = hex.EncodeToString(rnd[:6])
	}
	b.replyTo = driver.NewDestination(driver.Reply, instance).Name
	b.intake, b.stopIntk = context.WithCancel(context.Background())
	b.work, b.stopWork = context.WithCancel(context.Background())
	return b
}

type busKey struct{}

func busFrom(ctx context.Context) *Bus {
	b, _ := ctx.Value(busKey{}).(*Bus)
	return b
}

// Register adds a backend under name. Routes refer to it by that name. The bus
// takes ownership of d and closes it on Close. Register must be called before
// Start.
func (b *Bus) Register(name string, d driver.Driver) error {
	if err := validateToken("backend name", name); err != nil {
		return fmt.Errorf("eventbus: register backend: %w", err)
	}
	if d == nil {
		return fmt.Errorf("eventbus: register backend %q: nil driver", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed.Load():
		return fmt.Errorf("eventbus: register backend %q: %w", name, ErrClosed)
	case b.started:
		return fmt.Errorf("eventbus: register backend %q: %w", name, ErrStarted)
	case b.byName[name] != nil:
		return fmt.Errorf("eventbus: register backend %q: already registered", name)
	}
	be := &backend{name: name, drv: d, caps: d.Capabilities()}
	if rr, ok := d.(driver.RequestReplier); ok && be.caps.NativeRequestReply {
		be.rr = rr
	}
	b.backends = append(b.backends, be)
	b.byName[name] = be
	return nil
}

// Backends lists the registered backend names in registration order.
func (b *Bus) Backends() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, len(b.backends))
	for i, be := range b.backends {
		names[i] = be.name
	}
	return names
}

// Start validates the configuration — every route, every handler's
// destination against its backend's capabilities — and reports every problem
// at once in a *ConfigError before any traffic. Then it opens every
// registered subscription and starts delivering. On error, nothing is left
// open.
func (b *Bus) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("eventbus: start: %w", ErrClosed)
	}
	if b.started {
		return fmt.Errorf("eventbus: start: %w", ErrStarted)
	}
	if len(b.backends) == 0 {
		// The root package links no broker: the embedded default is a URL
		// that the user's code opens, with natsbus imported.
		return &ConfigError{Problems: []error{fmt.Errorf("%w registered: register one with Register or RegisterURL; "+
			"the zero-configuration default is bus.RegisterURL(ctx, %q, %q) with %s imported",
			ErrNoBackend, "embedded", "embedded:eventbus-data", "github.com/marty-msf/eventbus/natsbus")}}
	}
	var problems []error
	rt, errs := newRouter(b.opts.Routes, b.opts.DefaultBackend, b.backends, b.byName)
	problems = append(problems, errs...)
	if rt != nil {
		problems = append(problems, bind(rt, b.regs)...)
		problems = append(problems, checkDelivery(rt)...)
	}
	if len(problems) > 0 {
		return &ConfigError{Problems: problems}
	}
	b.routes.Store(rt)

	// Queries to a backend without native request/reply need this instance's
	// reply destination on that backend.
	var opened []*consumer
	fail := func(err error) error {
		for _, c := range opened {
			_ = c.sub.Close(context.WithoutCancel(ctx))
		}
		return err
	}
	for _, be := range b.backends {
		if be.rr != nil || !be.caps.Serves(driver.Query) || !be.caps.Serves(driver.Reply) {
			continue
		}
		dest := driver.Destination{Pattern: driver.Reply, Name: b.replyTo}
		sub, err := be.drv.Subscribe(ctx, dest, driver.SubscribeOptions{})
		if err != nil {
			return fail(fmt.Errorf("eventbus: start: reply subscription on %s: %w", be.name, err))
		}
		c := newReplyConsumer(b, be, dest, sub)
		be.replyS = c
		opened = append(opened, c)
	}
	replies := len(opened)
	for _, r := range b.regs {
		sub, err := r.open(ctx)
		if err != nil {
			return fail(fmt.Errorf("eventbus: start: subscribe %s on %s: %w", r.dest.Name, r.backend.name, err))
		}
		c := newConsumer(b, r, sub)
		r.sub.consumers = append(r.sub.consumers, c)
		opened = append(opened, c)
	}
	b.started = true
	b.regs = nil
	b.replies = opened[:replies]
	for _, c := range opened {
		b.consumers.Add(1)
		go c.run()
	}
	return nil
}

// Close stops intake at once (publishes and queries then fail with ErrClosed),
// starts no further handler, gives every message received but not started
// back to its backend, lets in-flight handlers finish and flushes partial
// stream batches, closes every subscription and driver, and returns when all
// of the bus's goroutines have ended.
//
// Close keeps ctx's deadline: when it passes, handlers' contexts are
// cancelled, and Close returns within a short grace period after it with an
// error matching ctx's — even if a handler ignores its context (its goroutine
// then outlives Close). A bus with nothing in flight closes without error
// even with a context that is already done.
func (b *Bus) Close(ctx context.Context) error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	var consumers []*consumer
	for s := range b.subs {
		consumers = append(consumers, s.consumers...)
	}
	consumers = append(consumers, b.replies...)
	backends := b.backends
	b.mu.Unlock()
	b.stopIntk()
	var errs []error
	if err := closeConsumers(ctx, consumers); err != nil {
		errs = append(errs, err)
	}
	b.stopWork()
	closeCtx, cancel := graceContext(ctx)
	defer cancel()
	for _, be := range backends {
		if err := be.drv.Close(closeCtx); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, fmt.Errorf("eventbus: close backend %s: %w", be.name, err))
		}
	}
	return errors.Join(errs...)
}

// Stats counts what the bus's consumers did since New.
type Stats struct {
	// Handled counts messages whose handler succeeded (each message of a
	// successful batch counts).
	Handled uint64
	// Failed counts handler failures (each attempt counts).
	Failed uint64
	// DeadLettered counts messages published to a dead-letter destination.
	DeadLettered uint64
	// Dropped counts messages terminated without being handled or
	// dead-lettered: refused even in reduced form by the dead-letter
	// destination, or given back at close to a backend that never
	// redelivers. Each is also logged at error level.
	Dropped uint64
	// Filtered counts messages acked without their handler because a
	// subscription's filter (WithFilter, Bridge.Filter) left them out.
	Filtered uint64
}

type counters struct {
	handled, failed, deadLettered, dropped, filtered atomic.Uint64
}

// Stats returns the bus's counters.
func (b *Bus) Stats() Stats {
	return Stats{
		Handled:      b.stats.handled.Load(),
		Failed:       b.stats.failed.Load(),
		DeadLettered: b.stats.deadLettered.Load(),
		Dropped:      b.stats.dropped.Load(),
		Filtered:     b.stats.filtered.Load(),
	}
}

// NewMessage returns a message of type msgType whose data is v encoded with
// the bus's codec.
func (b *Bus) NewMessage(msgType string, v any) (*Message, error) {
	m := &Message{Type: msgType}
	if v == nil {
		return m, nil
	}
	return m, b.codecs.encode(m, v)
}

// Decode decodes m's data into v with the codec its datacontenttype names.
// Errors unwrap to a *DecodeError (errors.As).
func (b *Bus) Decode(m *Message, v any) error {
	if err := b.codecs.decode(m, v); err != nil {
		return fmt.Errorf("eventbus: %w", err)
	}
	return nil
}

// newID returns an id unique across instances: a random per-bus base and a
// sequence number.
func (b *Bus) newID() string {
	var buf [40]byte
	n := copy(buf[:], b.idBase)
	return string(strconv.AppendUint(buf[:n], b.idSeq.Add(1), 36))
}

func (b *Bus) fill(m *Message) {
	if m.ID == "" {
		m.ID = b.newID()
	}
	if m.Source == "" {
		m.Source = b.source
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
}

// backendFor resolves dest on a started bus.
func (b *Bus) backendFor(dest driver.Destination) (*backend, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	rt := b.routes.Load()
	if rt == nil {
		return nil, ErrNotStarted
	}
	return rt.resolve(dest)
}
