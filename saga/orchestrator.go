package saga

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
)

// Lifecycle event types the orchestrator publishes (unless
// Options.DisableEvents). Each carries a LifecycleEvent; Subject and
// CorrelationID are the saga id.
const (
	EventStarted         = "saga.started"
	EventStepCompleted   = "saga.step.completed"
	EventStepFailed      = "saga.step.failed"
	EventStepCompensated = "saga.step.compensated"
	EventCompleted       = "saga.completed"
	EventCompensating    = "saga.compensating"
	EventCompensated     = "saga.compensated"
	EventFailed          = "saga.failed"
)

// ReplyType is the command type of participants' replies, sent to the
// orchestrator's Options.Service.
const ReplyType = "saga.reply"

// LifecycleEvent is the payload of the lifecycle events.
type LifecycleEvent struct {
	SagaID string `json:"saga_id"`
	Saga   string `json:"saga"`
	State  State  `json:"state"`
	Step   string `json:"step,omitempty"`
	Error  string `json:"error,omitempty"`
	// Started is when the saga was started, so that a consumer of its end
	// event knows its duration without having seen its start.
	Started time.Time `json:"started,omitzero"`
}

// Errors of the orchestrator; match them with errors.Is.
var (
	// ErrUnknownSaga: no definition is registered under that name.
	ErrUnknownSaga = errors.New("unknown saga")
	// ErrUnknownVersion: an instance runs on a version of its definition
	// that this orchestrator has not registered. The orchestrator leaves
	// it alone (Unrunnable lists it) until one that has it handles it.
	ErrUnknownVersion = errors.New("unknown definition version")
	// ErrDuplicateDefinition: a definition with that name is registered.
	ErrDuplicateDefinition = errors.New("duplicate definition")
	// ErrNotRunning: Cancel found the saga compensating or finished.
	ErrNotRunning = errors.New("not running")
	// ErrPastPivot: Cancel found the saga past its point of no return (at
	// a retriable step): it can only go forward.
	ErrPastPivot = errors.New("past its pivot")
	// ErrNotFailed: Retry found the saga in another state than Failed.
	ErrNotFailed = errors.New("not failed")
	// ErrAlreadyRunning: Run was called while it runs.
	ErrAlreadyRunning = errors.New("orchestrator already running")
)

// Options configures an Orchestrator. The zero value is valid.
type Options struct {
	// Service is the service name under which the orchestrator receives
	// participants' replies. Orchestrator instances of one store share it;
	// default "saga".
	Service string
	// Instance names this orchestrator instance as lease owner. Default
	// random.
	Instance string
	// PollInterval is how often Run looks for passed deadlines and expired
	// leases. Default 500ms.
	PollInterval time.Duration
	// Lease is how long an instance holds a saga after it last touched it;
	// Run renews the leases it holds every Lease/3. When an instance dies,
	// its sagas are taken over this long after its last renewal. Default 10s.
	Lease time.Duration
	// Concurrency bounds the replies handled and due sagas processed at
	// once. Default 16.
	Concurrency int
	// DisableEvents turns off the lifecycle events.
	DisableEvents bool
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider makes the saga's spans: "saga <name>" when Start
	// starts it, and under it a span per command sent, "step <step>" or
	// "compensate <step>", whichever orchestrator instance sends it and
	// however late (a retry, a deadline, a takeover). The saga span's trace
	// context is persisted with the instance (Instance.TraceParent), so
	// the saga is one trace: the commands carry it, and a bus with a
	// telemetry Observer nests the participants' handling under the step.
	// nil: no saga spans; the trace context persisted is then the span of
	// Start's context, if any, which the commands continue.
	TracerProvider trace.TracerProvider
}

// Orchestrator drives sagas: it starts them, sends their commands through
// the bus, applies participants' replies and fires deadlines, persisting
// every transition in its Store before sending what the transition sends.
// It is also the manager API: Start, Get, List, Cancel and Retry.
//
// Create it with NewOrchestrator (it registers the reply handler), register
// definitions (a definition with wait steps subscribes to their events),
// start the bus, then keep Run running.
// Its methods are safe for concurrent use.
type Orchestrator struct {
	bus   *eventbus.Bus
	store Store
	opts  Options
	log   *slog.Logger

	mu     sync.RWMutex
	defs   map[defKey]*Definition
	latest map[string]int // name → highest version registered

	subMu  sync.Mutex
	events map[string]bool // event types subscribed to for wait steps

	tracer trace.Tracer // nil without Options.TracerProvider

	running    atomic.Bool
	cache      instanceCache
	unrunnable sync.Map // ids of sagas that failed to process, warned about once

	// foreign holds the due sagas whose definition (name or version) this
	// orchestrator does not have: another service's, or a retired
	// version's. poll passes over them, so that however many there are they
	// do not keep this orchestrator's own sagas out of its batches. Register
	// empties it.
	foreignMu  sync.Mutex
	foreign    map[string]bool
	foreignGen int // counts Register calls, which empty foreign
}

// NewOrchestrator returns an orchestrator on bus and store, and registers
// its reply handler (command ReplyType of Options.Service) on bus, so it must
// be called before bus.Start. It neither starts nor closes bus or store.
func NewOrchestrator(bus *eventbus.Bus, store Store, opts *Options) (*Orchestrator, error) {
	if bus == nil || store == nil {
		return nil, errors.New("saga: new orchestrator: nil bus or store")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Service == "" {
		o.Service = "saga"
	}
	if o.Instance == "" {
		o.Instance = randomID()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	if o.Lease <= 0 {
		o.Lease = 10 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	orc := &Orchestrator{bus: bus, store: store, opts: o, log: log, defs: map[defKey]*Definition{}, latest: map[string]int{}}
	if o.TracerProvider != nil {
		orc.tracer = o.TracerProvider.Tracer(TracerScope)
	}
	h := eventbus.HandlerFunc(orc.handleReply)
	if _, err := bus.HandleCommand(context.Background(), o.Service, ReplyType, h,
		eventbus.WithConcurrency(o.Concurrency), eventbus.WithRetry(commandRetry)); err != nil {
		return nil, fmt.Errorf("saga: new orchestrator: %w", err)
	}
	return orc, nil
}

type defKey struct {
	name    string
	version int
}

// Register validates and adds definitions; it may be called at any time.
// Several versions of one name may be registered: Start runs the highest,
// and instances in flight keep theirs. Every instance of an orchestrator
// sharing a store must register the same definitions, and keep a version
// registered until no instance runs on it (see Unrunnable).
func (o *Orchestrator) Register(defs ...Definition) error {
	var errs []error
	for i := range defs {
		if err := defs[i].Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[defKey]bool{}
	for _, d := range defs {
		k := defKey{d.Name, max(d.Version, 1)}
		if o.defs[k] != nil || seen[k] {
			return fmt.Errorf("saga: register: %w: %q version %d", ErrDuplicateDefinition, k.name, k.version)
		}
		seen[k] = true
	}
	if err := o.subscribeEvents(defs); err != nil {
		return err
	}
	for i := range defs {
		d := defs[i].withDefaults()
		o.defs[defKey{d.Name, d.Version}] = d
		o.latest[d.Name] = max(o.latest[d.Name], d.Version)
	}
	// Sagas passed over for lack of a definition may run now.
	o.foreignMu.Lock()
	o.foreign, o.foreignGen = nil, o.foreignGen+1
	o.foreignMu.Unlock()
	return nil
}

// subscribeEvents subscribes to the event types the wait steps of defs wait
// for, in the durable group Options.Service, unless done already.
func (o *Orchestrator) subscribeEvents(defs []Definition) error {
	o.subMu.Lock()
	defer o.subMu.Unlock()
	var types []string
	for i := range defs {
		for _, t := range defs[i].events() {
			if !o.events[t] && !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	if len(types) == 0 {
		return nil
	}
	h := eventbus.HandlerFunc(o.handleEvent)
	if _, err := o.bus.SubscribeEvents(context.Background(), types, o.opts.Service, h,
		eventbus.WithConcurrency(o.opts.Concurrency), eventbus.WithRetry(commandRetry)); err != nil {
		return fmt.Errorf("saga: subscribe to %v: %w", types, err)
	}
	if o.events == nil {
		o.events = map[string]bool{}
	}
	for _, t := range types {
		o.events[t] = true
	}
	return nil
}

// definition returns the highest version registered under name.
func (o *Orchestrator) definition(name string) (*Definition, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if v, ok := o.latest[name]; ok {
		return o.defs[defKey{name, v}], nil
	}
	return nil, fmt.Errorf("saga: start: %w: %q", ErrUnknownSaga, name)
}

// definitionOf returns the definition instance in runs on.
func (o *Orchestrator) definitionOf(in *Instance) (*Definition, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if d := o.defs[defKey{in.Name, in.definitionVersion()}]; d != nil {
		return d, nil
	}
	if _, ok := o.latest[in.Name]; !ok {
		return nil, fmt.Errorf("saga %s: %w: %q", in.ID, ErrUnknownSaga, in.Name)
	}
	return nil, fmt.Errorf("saga %s: %w: %q version %d", in.ID, ErrUnknownVersion, in.Name, in.definitionVersion())
}

// Unrunnable lists the active instances (at most limit; zero means 1000)
// whose definition or definition version this orchestrator has not
// registered: it leaves them alone, and they wait for an orchestrator that
// has it. After a deployment it should be empty.
func (o *Orchestrator) Unrunnable(ctx context.Context, limit int) ([]*Instance, error) {
	var out []*Instance
	for _, st := range []State{Running, Compensating} {
		ins, err := o.store.List(ctx, ListFilter{State: st, Limit: limit})
		if err != nil {
			return nil, fmt.Errorf("saga: unrunnable: %w", err)
		}
		for _, in := range ins {
			if _, err := o.definitionOf(in); err != nil {
				out = append(out, in)
			}
		}
	}
	return out, nil
}

// StartOption tunes Start.
type StartOption func(*startOptions)

type startOptions struct{ id string }

// WithID gives the saga a chosen id instead of a random one. Start then
// fails with ErrExists when the id is taken, which makes starting idempotent.
func WithID(id string) StartOption { return func(s *startOptions) { s.id = id } }

// Start begins a saga of the registered definition name with data (encoded
// as JSON) and returns its id once its first transition is persisted. Its
// first command is sent before Start returns; if sending fails, the saga is
// resent by Run.
func (o *Orchestrator) Start(ctx context.Context, name string, data any, opts ...StartOption) (string, error) {
	def, err := o.definition(name)
	if err != nil {
		return "", err
	}
	var so startOptions
	for _, opt := range opts {
		opt(&so)
	}
	if so.id == "" {
		so.id = randomID()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("saga: start %s: encode data: %w", name, err)
	}
	now := time.Now()
	in := &Instance{ID: so.id, Name: name, DefinitionVersion: def.Version, Data: raw, Created: now, Updated: now, Version: 1,
		Owner: o.opts.Instance, LeaseUntil: now.Add(o.opts.Lease)}
	ctx, end := o.startTrace(ctx, in)
	m := &machine{def: def, in: in, now: now}
	m.start()
	m.settle()
	if err := o.store.Create(ctx, in); err != nil {
		err = fmt.Errorf("saga: start %s: %w", name, err)
		end(err)
		return "", err
	}
	defer end(nil)
	o.cache.put(in)
	o.emit(ctx, in)
	return in.ID, nil
}

// Get returns the saga instance with its step states and history.
func (o *Orchestrator) Get(ctx context.Context, id string) (*Instance, error) {
	in, err := o.store.Load(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("saga: get: %w", err)
	}
	return in, nil
}

// List returns the saga instances matching f.
func (o *Orchestrator) List(ctx context.Context, f ListFilter) ([]*Instance, error) {
	ins, err := o.store.List(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	return ins, nil
}

// Cancel stops a running saga and compensates the steps that took effect,
// in reverse order. It fails with ErrNotRunning when the saga is already
// compensating or finished, and with ErrPastPivot when it is at a retriable
// step.
//
// Cancel needs the saga's definition; a program without it (such as the
// eventbus CLI) records a request with RequestCancel instead, which an
// orchestrator applies.
func (o *Orchestrator) Cancel(ctx context.Context, id string) error {
	_, err := o.apply(ctx, id, false, func(m *machine) (bool, error) {
		if err := m.cancel("cancel", nil); err != nil {
			return false, err
		}
		return true, nil
	})
	return err
}

// Retry resumes compensating a Failed saga where its compensation gave up.
// It fails with ErrNotFailed when the saga is in another state. See
// RequestRetry for programs without the saga's definition.
func (o *Orchestrator) Retry(ctx context.Context, id string) error {
	_, err := o.apply(ctx, id, false, func(m *machine) (bool, error) {
		if err := m.retry("", nil); err != nil {
			return false, err
		}
		return true, nil
	})
	return err
}

// Run fires deadlines, takes over sagas whose owner's lease expired and
// renews the leases this instance holds, until ctx ends; then it returns nil.
// Replies are handled by the bus, whether Run runs or not.
func (o *Orchestrator) Run(ctx context.Context) error {
	if !o.running.CompareAndSwap(false, true) {
		return fmt.Errorf("saga: run: %w", ErrAlreadyRunning)
	}
	defer o.running.Store(false)
	// Leases are renewed on their own schedule: a long poll (many sagas
	// due on a slow database) must not let them lapse, or the other
	// instances take this one's sagas over while it works on them.
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		o.renewLeases(ctx)
	}()
	defer func() { <-renewDone }()
	tick := time.NewTicker(o.opts.PollInterval)
	defer tick.Stop()
	for {
		o.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// renewLeases extends the leases this instance holds every Lease/3 until
// ctx ends.
func (o *Orchestrator) renewLeases(ctx context.Context) {
	tick := time.NewTicker(o.opts.Lease / 3)
	defer tick.Stop()
	for {
		if err := o.store.RenewLeases(ctx, o.opts.Instance, time.Now().Add(o.opts.Lease)); err != nil && ctx.Err() == nil {
			o.log.Warn("saga: renew leases", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pollBatch is how many due sagas poll processes at a time.
const pollBatch = 256

// poll processes every due saga, Concurrency at a time.
func (o *Orchestrator) poll(ctx context.Context) {
	for ctx.Err() == nil {
		o.foreignMu.Lock()
		skip, gen := o.foreign, o.foreignGen
		o.foreignMu.Unlock()
		limit := pollBatch + len(skip)
		due, err := o.store.Due(ctx, time.Now(), limit)
		if err != nil {
			if ctx.Err() == nil {
				o.log.Warn("saga: poll", "err", err)
			}
			return
		}
		// Pass over the foreign sagas still due; forget those that are not.
		ids := make([]string, 0, len(due))
		still := make(map[string]bool, len(skip))
		for _, id := range due {
			if skip[id] {
				still[id] = true
				continue
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			o.setForeign(gen, still)
			return
		}
		sem := make(chan struct{}, o.opts.Concurrency)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed bool
		for _, id := range ids {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, err := o.apply(ctx, id, false, o.due); err != nil {
					unknown := errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrUnknownSaga)
					mu.Lock()
					failed = true
					if unknown {
						still[id] = true
					}
					mu.Unlock()
					if _, warned := o.unrunnable.LoadOrStore(id, true); ctx.Err() == nil && (!unknown || !warned) {
						o.log.Warn("saga: process due saga", "saga", id, "err", err)
					}
				}
			}()
		}
		wg.Wait()
		o.setForeign(gen, still)
		// A full batch that went through entirely may be followed by more;
		// sagas that failed wait for the next tick, not a busy loop.
		if len(due) < limit || failed {
			return
		}
	}
}

// setForeign replaces the foreign set poll read at generation gen with
// now, unless Register emptied it meanwhile.
func (o *Orchestrator) setForeign(gen int, now map[string]bool) {
	o.foreignMu.Lock()
	defer o.foreignMu.Unlock()
	if o.foreignGen == gen {
		o.foreign = now
	}
}

// due handles a saga that Store.Due returned: a pending manager request,
// passed deadlines, or an owner whose lease expired.
func (o *Orchestrator) due(m *machine) (bool, error) {
	if m.in.Request != nil {
		// Deadlines that passed too wait for the next poll; a takeover
		// does not, so that the last transition's messages are sent
		// before whatever the request sends.
		o.takeover(m)
		m.applyRequest()
		return true, nil
	}
	if m.onDue() {
		return true, nil
	}
	return o.takeover(m), nil
}

// takeover sends the last transition's messages again when the saga is
// active and its owner's lease expired: the owner died (or failed to send).
// Their ids are those of the first sending, so brokers and participants
// drop what arrived already.
func (o *Orchestrator) takeover(m *machine) bool {
	if !m.in.State.Active() || m.in.LeaseUntil.After(m.now) {
		return false
	}
	m.record("takeover", "", 0, o.opts.Instance)
	m.in.Outbox = m.prev.Outbox
	return true
}

// apply runs one transition on saga id: load, change, persist with the
// version check (reloading on a conflict), then send the outbox. With
// cached, it may start from the instance as this orchestrator last persisted
// it instead of loading it: the version check catches a stale copy, and a
// decision to change nothing is only taken on a fresh load.
func (o *Orchestrator) apply(ctx context.Context, id string, cached bool, fn func(*machine) (bool, error)) (*Instance, error) {
	for {
		var cur *Instance
		if cached {
			cur = o.cache.get(id)
			cached = false
		}
		fromCache := cur != nil
		if cur == nil {
			var err error
			if cur, err = o.store.Load(ctx, id); err != nil {
				return nil, fmt.Errorf("saga: %w", err)
			}
		}
		def, err := o.definitionOf(cur)
		if err != nil {
			o.cache.forget(id)
			return nil, err
		}
		next := cur.clone()
		next.Outbox = nil
		now := time.Now()
		m := &machine{def: def, in: next, now: now, prev: cur, by: o.opts.Instance}
		changed, err := fn(m)
		if fromCache && (err != nil || !changed) {
			continue
		}
		if err != nil || !changed {
			return cur, err
		}
		m.settle()
		next.Version = cur.Version + 1
		next.Updated = now
		next.Owner, next.LeaseUntil = o.opts.Instance, now.Add(o.opts.Lease)
		if err := o.store.Update(ctx, next); errors.Is(err, ErrConflict) {
			o.cache.forget(id)
			continue
		} else if err != nil {
			o.cache.forget(id)
			return nil, fmt.Errorf("saga: %w", err)
		}
		o.cache.put(next)
		o.emit(ctx, next)
		return next, nil
	}
}

// instanceCache holds the instances this orchestrator persisted last, so
// that a reply needs no load. Entries are never modified.
type instanceCache struct {
	mu sync.Mutex
	m  map[string]*Instance
}

// maxCached bounds the cache; when it is full it starts over.
const maxCached = 10000

func (c *instanceCache) get(id string) *Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *instanceCache) put(in *Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !in.State.Active() {
		delete(c.m, in.ID)
		return
	}
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*Instance)
	}
	c.m[in.ID] = in
}

func (c *instanceCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// emit sends a persisted transition's outbox. On failure it gives up the
// lease, so that Run (of any instance) sends the outbox again soon.
func (o *Orchestrator) emit(ctx context.Context, in *Instance) {
	sctx := sagaContext(ctx, in)
	for _, out := range in.Outbox {
		var err error
		switch out.Kind {
		case actionDo, actionUndo:
			err = o.sendCommand(ctx, sctx, in, out)
		default:
			if !o.opts.DisableEvents {
				err = o.publishEvent(sctx, in, out)
			}
		}
		if err != nil {
			o.log.Warn("saga: send", "saga", in.ID, "kind", out.Kind, "err", err)
			if err := o.store.ReleaseLease(context.WithoutCancel(ctx), in.ID, o.opts.Instance); err != nil {
				o.log.Warn("saga: release lease", "saga", in.ID, "err", err)
			}
			return
		}
	}
}

// Extension attributes of step commands and replies.
const (
	extSagaID  = "sagaid"
	extSaga    = "saganame"
	extStep    = "sagastep"
	extAction  = "sagaaction"
	extAttempt = "sagaattempt"
	extReplyTo = "sagareplyto"
	extOutcome = "sagaoutcome"
	extError   = "sagaerror"
	// extRetriable marks the commands of retriable steps, whose failures
	// participants do not record as final.
	extRetriable = "sagaretriable"
)

// CommandID is the id of the command of a saga step: deterministic, so that
// brokers and participants recognise a command sent again.
func CommandID(sagaID, step string, compensation bool, attempt int) string {
	action := actionDo
	if compensation {
		action = actionUndo
	}
	return sagaID + "/" + step + "/" + action + "/" + strconv.Itoa(attempt)
}

// sendCommand sends a step's command or compensation in its span, under the
// saga's span (sctx); ctx is what caused the transition.
func (o *Orchestrator) sendCommand(ctx, sctx context.Context, in *Instance, out Outgoing) (err error) {
	def, err := o.definitionOf(in)
	if err != nil {
		return err
	}
	step := def.Steps[out.Step]
	typ := step.Command
	if out.Kind == actionUndo {
		typ = step.Compensation
	}
	m := &eventbus.Message{
		ID:              CommandID(in.ID, step.Name, out.Kind == actionUndo, out.Attempt),
		Type:            typ,
		Subject:         in.ID,
		CorrelationID:   in.ID,
		Key:             in.ID,
		DataContentType: "application/json",
		Data:            in.Steps[out.Step].Input,
		Extensions: map[string]string{
			extSagaID:  in.ID,
			extSaga:    in.Name,
			extStep:    step.Name,
			extAction:  out.Kind,
			extAttempt: strconv.Itoa(out.Attempt),
			extReplyTo: o.opts.Service,
		},
	}
	if step.Kind == Retriable {
		m.Extensions[extRetriable] = "1"
	}
	ctx, span := o.stepSpan(ctx, sctx, in, step.Name, out)
	defer func() { endSpan(span, err) }()
	carryTrace(ctx, m)
	if err := o.bus.SendCommand(ctx, step.Service, m); err != nil {
		return fmt.Errorf("saga: send %s to %s: %w", typ, step.Service, err)
	}
	return nil
}

func (o *Orchestrator) publishEvent(ctx context.Context, in *Instance, out Outgoing) error {
	ev := LifecycleEvent{SagaID: in.ID, Saga: in.Name, State: in.State, Error: out.Error, Started: in.Created}
	if out.Step >= 0 && out.Step < len(in.Steps) {
		ev.Step = in.Steps[out.Step].Name
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("saga: encode event: %w", err)
	}
	m := &eventbus.Message{
		ID:              in.ID + "/event/" + strconv.Itoa(out.Attempt),
		Type:            out.Kind,
		Subject:         in.ID,
		CorrelationID:   in.ID,
		Key:             in.ID,
		DataContentType: "application/json",
		Data:            data,
	}
	carryTrace(ctx, m)
	if err := o.bus.PublishEvent(ctx, m); err != nil {
		return fmt.Errorf("saga: publish %s: %w", out.Kind, err)
	}
	return nil
}

func (o *Orchestrator) handleReply(ctx context.Context, m *eventbus.Message) error {
	r, err := parseReply(m)
	if err != nil {
		return eventbus.Permanent(err)
	}
	_, err = o.apply(ctx, r.SagaID, true, func(mc *machine) (bool, error) {
		return mc.onReply(r), nil
	})
	if errors.Is(err, ErrNotFound) {
		o.log.Warn("saga: reply for unknown saga", "saga", r.SagaID)
		return nil
	}
	return err
}

// handleEvent applies an event a wait step may be waiting for; its
// CorrelationID names the saga. Events of other sagas and of no saga are
// acknowledged and dropped.
func (o *Orchestrator) handleEvent(ctx context.Context, m *eventbus.Message) error {
	if m.CorrelationID == "" {
		return nil
	}
	data := json.RawMessage(m.Data)
	if len(data) == 0 {
		data = json.RawMessage("null")
	} else if !json.Valid(data) {
		// Kept as a JSON string (base64), so that the instance stays JSON.
		b, err := json.Marshal(m.Data)
		if err != nil {
			return eventbus.Permanent(fmt.Errorf("saga: event %s: %w", m.ID, err))
		}
		data = b
	}
	_, err := o.apply(ctx, m.CorrelationID, true, func(mc *machine) (bool, error) {
		return mc.onEvent(m.Type, data), nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func parseReply(m *eventbus.Message) (*reply, error) {
	x := m.Extensions
	r := &reply{SagaID: x[extSagaID], Step: x[extStep], Action: x[extAction], Outcome: x[extOutcome], Error: x[extError], Data: m.Data}
	attempt, err := strconv.Atoi(x[extAttempt])
	if err != nil || r.SagaID == "" || r.Step == "" || r.Outcome == "" {
		return nil, fmt.Errorf("saga: malformed reply %s: missing saga attributes", m.ID)
	}
	r.Attempt = attempt
	return r, nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
