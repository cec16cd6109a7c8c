package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/marty-msf/eventbus"
)

// Request is a step command as a participant's handler sees it.
type Request struct {
	SagaID string
	Saga   string // the definition's name
	Step   string
	// Compensation is true for a compensation command.
	Compensation bool
	Attempt      int
	// Key identifies the step's effect (service, saga, step, action): the
	// same for every attempt. Handlers whose effects live elsewhere use it
	// as their idempotency key.
	Key string
	// Data is the step's payload (Step.Input), JSON encoded; compensations
	// get the same payload as the step.
	Data json.RawMessage
	// Reply is, for a compensation, the reply the step's handler gave.
	Reply json.RawMessage
	// Resumed is true when an earlier run of this command's handler was
	// interrupted — its process died, or lost its claim — so that the
	// effect may have been made in part or whole. Handlers whose effects
	// live in their own database check Key there.
	Resumed bool
	// Uncertain is true for a compensation whose step's handler was
	// interrupted (its process died while running it): whether the step
	// took effect is unknown, Reply is empty, and the compensation must
	// undo whatever of the step took effect, if anything.
	Uncertain bool
	Message   *eventbus.Message
}

// Decode decodes the request's payload into v.
func (r *Request) Decode(v any) error {
	if err := json.Unmarshal(r.Data, v); err != nil {
		return fmt.Errorf("saga: decode request %s: %w", r.Key, err)
	}
	return nil
}

// DecodeReply decodes, for a compensation, the step's reply into v.
func (r *Request) DecodeReply(v any) error {
	if err := json.Unmarshal(r.Reply, v); err != nil {
		return fmt.Errorf("saga: decode reply of %s: %w", r.Key, err)
	}
	return nil
}

type requestKey struct{}

// RequestFrom returns the request a participant's handler is serving.
func RequestFrom(ctx context.Context) (*Request, bool) {
	r, ok := ctx.Value(requestKey{}).(*Request)
	return r, ok
}

// StepHandler performs a step command (or a compensation) and returns the
// reply, which is JSON encoded. Returning an error marked with Fail fails
// the step for good: the saga compensates. Any other error is transient: the
// orchestrator retries within the step's policy. Either way the handler must
// leave no effect when it returns an error.
type StepHandler func(ctx context.Context, req *Request) (reply any, err error)

type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// Fail marks err as a definitive failure of a step: the orchestrator does
// not retry and compensates the saga. A compensation is retried whatever its
// error, until the definition's CompensationRetry gives up. Fail(nil) is nil.
func Fail(err error) error {
	if err == nil {
		return nil
	}
	return &failure{err: err}
}

// IsFailure reports whether err was marked with Fail.
func IsFailure(err error) bool {
	var f *failure
	return errors.As(err, &f)
}

// ParticipantOptions configures a Participant. The zero value is valid.
type ParticipantOptions struct {
	// Claim is how long a command's deduplication record stays reserved
	// for this process without news from it. While a handler runs, the
	// participant renews the claim every Claim/4, so a handler may run as
	// long as it needs; when the process dies, its claims expire within
	// Claim and the command's next delivery, next attempt or compensation
	// takes them over. A duplicate arriving while the claim holds is
	// redelivered later. Default 5s; keep it well below Step.Timeout ×
	// Retry.Attempts, so that a step outlives a dead holder's claim.
	Claim time.Duration
	// Concurrency bounds the commands of one type handled at once.
	// Default 8.
	Concurrency int
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// Participant serves a service's saga step commands on a bus: it records
// every outcome in a Store before replying, so that a command delivered
// again (a redelivery, or an orchestrator resending after a crash) gets the
// recorded reply without running the handler again. A compensation that
// arrives before its step (possible when the step timed out) completes
// without calling the handler and bars the step from running later.
type Participant struct {
	bus     *eventbus.Bus
	service string
	store   Store
	owner   string
	opts    ParticipantOptions
	log     *slog.Logger
}

// NewParticipant returns a participant serving commands sent to service.
func NewParticipant(bus *eventbus.Bus, service string, store Store, opts *ParticipantOptions) (*Participant, error) {
	if bus == nil || store == nil {
		return nil, errors.New("saga: new participant: nil bus or store")
	}
	var o ParticipantOptions
	if opts != nil {
		o = *opts
	}
	if o.Claim <= 0 {
		o.Claim = 5 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Participant{bus: bus, service: service, store: store, owner: randomID(), opts: o, log: log}, nil
}

// commandRetry redelivers the commands a participant could not settle (its
// store failed, or a live duplicate holds the record) and the replies an
// orchestrator could not apply, until they go through: dead-lettering them
// would only stall the saga until its next attempt.
var commandRetry = eventbus.RetryPolicy{MaxAttempts: eventbus.RetryForever, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}

// Handle registers h for step commands (or compensations) of type cmdType.
// Call it before the bus starts, or after: see Bus.HandleCommand.
func (p *Participant) Handle(cmdType string, h StepHandler) error {
	if h == nil {
		return fmt.Errorf("saga: handle %s: %w", cmdType, eventbus.ErrNilHandler)
	}
	hf := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error { return p.serve(ctx, m, h) })
	if _, err := p.bus.HandleCommand(context.Background(), p.service, cmdType, hf,
		eventbus.WithConcurrency(p.opts.Concurrency), eventbus.WithRetry(commandRetry)); err != nil {
		return fmt.Errorf("saga: handle %s: %w", cmdType, err)
	}
	return nil
}

// errBusy has a command redelivered while a duplicate is being handled.
var errBusy = errors.New("saga: a duplicate of this command is being handled")

// errClaimLost has a command redelivered whose claim another process took
// over while this one ran the handler.
var errClaimLost = errors.New("saga: claim lost while the handler ran")

// outcomeAbandoned marks the record of a step whose handler's process died
// while running it and whose compensation came before a new attempt: the
// step may have taken effect, and can no longer run.
const outcomeAbandoned = "abandoned"

func (p *Participant) serve(ctx context.Context, m *eventbus.Message, h StepHandler) error {
	x := m.Extensions
	req := &Request{SagaID: x[extSagaID], Saga: x[extSaga], Step: x[extStep], Compensation: x[extAction] == actionUndo, Data: m.Data, Message: m}
	attempt, err := strconv.Atoi(x[extAttempt])
	replyTo := x[extReplyTo]
	if err != nil || req.SagaID == "" || req.Step == "" || replyTo == "" || (x[extAction] != actionDo && x[extAction] != actionUndo) {
		return eventbus.Permanent(fmt.Errorf("saga: command %s of type %s lacks saga attributes", m.ID, m.Type))
	}
	req.Attempt = attempt
	doKey := p.service + "/" + req.SagaID + "/" + req.Step + "/" + actionDo
	req.Key = doKey
	if req.Compensation {
		req.Key = p.service + "/" + req.SagaID + "/" + req.Step + "/" + actionUndo
		done, err := p.prepareUndo(ctx, doKey, req)
		if err != nil {
			return err
		}
		if done {
			return p.reply(ctx, m, replyTo, &Record{Outcome: OutcomeOK})
		}
	}
	rec, claimed, err := p.store.Claim(ctx, req.Key, p.owner, time.Now().Add(p.opts.Claim))
	switch {
	case err != nil:
		return err
	case !claimed && rec.Done:
		return p.reply(ctx, m, replyTo, rec)
	case !claimed:
		return errBusy
	}
	req.Resumed = rec.Runs > 1
	out, err := p.runClaimed(ctx, req, h)
	if err != nil {
		return err
	}
	// A compensation and a retriable step are retried until they succeed,
	// so only their success is final; another step's definitive failure is
	// final too.
	if out.Outcome == OutcomeRetry || ((req.Compensation || x[extRetriable] != "") && out.Outcome != OutcomeOK) {
		if err := p.store.Release(ctx, req.Key, p.owner); err != nil {
			return err
		}
	} else if err := p.store.Complete(ctx, req.Key, p.owner, out); err != nil {
		return err
	}
	return p.reply(ctx, m, replyTo, out)
}

// prepareUndo looks at the step's record before a compensation runs. It
// reports done when there is nothing to undo (the step failed, or never ran
// here: then it is barred from running later), errBusy while the step's
// handler runs in a live process, and otherwise fills in the step's reply,
// or marks the compensation Uncertain when the step's handler died while
// running it.
func (p *Participant) prepareUndo(ctx context.Context, doKey string, req *Request) (done bool, err error) {
	rec, err := p.store.Lookup(ctx, doKey)
	if err != nil {
		return false, err
	}
	if rec == nil || (!rec.Done && !rec.Until.After(time.Now())) {
		// The step never ran here, or its holder stopped renewing its
		// claim (its process died): take the record over, so that the
		// step cannot run any more.
		got, claimed, err := p.store.Claim(ctx, doKey, p.owner, time.Now().Add(p.opts.Claim))
		switch {
		case err != nil:
			return false, err
		case !claimed && got.Done:
			rec = got
		case !claimed:
			return false, errBusy
		case got.Runs == 1:
			bar := &Record{Outcome: OutcomeFailed, Error: "compensated before it ran"}
			return true, p.store.Complete(ctx, doKey, p.owner, bar)
		default:
			abandoned := &Record{Outcome: outcomeAbandoned, Error: "its handler's process died; compensated"}
			if err := p.store.Complete(ctx, doKey, p.owner, abandoned); err != nil {
				return false, err
			}
			rec = &Record{Done: true, Outcome: outcomeAbandoned}
		}
	}
	switch {
	case !rec.Done:
		return false, errBusy
	case rec.Outcome == outcomeAbandoned:
		req.Uncertain = true
		return false, nil
	case rec.Outcome != OutcomeOK:
		return true, nil
	}
	req.Reply = rec.Reply
	return false, nil
}

// runClaimed runs h while renewing the claim on req.Key. When the claim is
// lost (another process took it over after renewals failed), the handler's
// context is cancelled and errClaimLost returned: the record is the other
// process's now.
func (p *Participant) runClaimed(ctx context.Context, req *Request, h StepHandler) (*Record, error) {
	hctx, cancel := context.WithCancelCause(context.WithValue(ctx, requestKey{}, req))
	defer cancel(nil)
	stop := make(chan struct{})
	renewed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(p.opts.Claim / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				renewed <- nil
				return
			case <-tick.C:
			}
			err := p.store.RenewClaim(ctx, req.Key, p.owner, time.Now().Add(p.opts.Claim))
			if errors.Is(err, ErrConflict) {
				cancel(errClaimLost)
				renewed <- errClaimLost
				return
			}
			if err != nil && ctx.Err() == nil {
				p.log.Warn("saga: renew claim", "key", req.Key, "err", err)
			}
		}
	}()
	out := p.run(hctx, req, h)
	close(stop)
	if err := <-renewed; err != nil {
		return nil, err
	}
	return out, nil
}

// run calls h and turns its result into a record.
func (p *Participant) run(ctx context.Context, req *Request, h StepHandler) (rec *Record) {
	defer func() {
		if r := recover(); r != nil {
			rec = &Record{Outcome: OutcomeRetry, Error: fmt.Sprintf("handler panicked: %v", r)}
		}
	}()
	v, err := h(ctx, req)
	switch {
	case IsFailure(err):
		return &Record{Outcome: OutcomeFailed, Error: err.Error()}
	case err != nil:
		return &Record{Outcome: OutcomeRetry, Error: err.Error()}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return &Record{Outcome: OutcomeRetry, Error: fmt.Sprintf("encode reply: %v", err)}
	}
	return &Record{Outcome: OutcomeOK, Reply: data}
}

func (p *Participant) reply(ctx context.Context, cmd *eventbus.Message, replyTo string, rec *Record) error {
	x := cmd.Extensions
	if rec.Outcome == outcomeAbandoned {
		rec = &Record{Outcome: OutcomeFailed, Error: rec.Error}
	}
	m := &eventbus.Message{
		ID:              "reply/" + cmd.ID + "/" + rec.Outcome,
		Type:            ReplyType,
		Subject:         x[extSagaID],
		CorrelationID:   x[extSagaID],
		CausationID:     cmd.ID,
		Key:             x[extSagaID],
		DataContentType: "application/json",
		Data:            rec.Reply,
		Extensions: map[string]string{
			extSagaID:  x[extSagaID],
			extStep:    x[extStep],
			extAction:  x[extAction],
			extAttempt: x[extAttempt],
			extOutcome: rec.Outcome,
		},
	}
	if rec.Error != "" {
		m.Extensions[extError] = rec.Error
	}
	// The reply continues the command's trace, from the handling's span
	// when there is one (written over by the bus's Observer, if any).
	m.TraceParent, m.TraceState = cmd.TraceParent, cmd.TraceState
	carryTrace(ctx, m)
	if err := p.bus.SendCommand(ctx, replyTo, m); err != nil {
		return fmt.Errorf("saga: reply to %s: %w", cmd.ID, err)
	}
	return nil
}
