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
	Reply   json.RawMessage
	Message *eventbus.Message
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
	// Claim is how long a command being handled keeps its deduplication
	// record for this instance; a duplicate arriving meanwhile is
	// redelivered later, and after Claim another instance may run it.
	// Default 1 minute; it must exceed the longest handler run.
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
		o.Claim = time.Minute
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

// Handle registers h for step commands (or compensations) of type cmdType.
// Call it before the bus starts.
func (p *Participant) Handle(cmdType string, h StepHandler) error {
	if h == nil {
		return fmt.Errorf("saga: handle %s: %w", cmdType, eventbus.ErrNilHandler)
	}
	hf := eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error { return p.serve(ctx, m, h) })
	if _, err := p.bus.HandleCommand(context.Background(), p.service, cmdType, hf, eventbus.WithConcurrency(p.opts.Concurrency)); err != nil {
		return fmt.Errorf("saga: handle %s: %w", cmdType, err)
	}
	return nil
}

// errBusy has a command redelivered while a duplicate is being handled.
var errBusy = errors.New("saga: a duplicate of this command is being handled")

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
		rec, err := p.store.Lookup(ctx, doKey)
		switch {
		case err != nil:
			return err
		case rec == nil:
			// The step never ran here: bar it, and there is nothing to undo.
			_, claimed, err := p.store.Claim(ctx, doKey, p.owner, time.Now().Add(p.opts.Claim))
			if err != nil {
				return err
			}
			if !claimed {
				return errBusy
			}
			bar := &Record{Outcome: OutcomeFailed, Error: "compensated before it ran"}
			if err := p.store.Complete(ctx, doKey, p.owner, bar); err != nil {
				return err
			}
			return p.reply(ctx, m, replyTo, &Record{Outcome: OutcomeOK})
		case !rec.Done:
			return errBusy
		case rec.Outcome != OutcomeOK:
			return p.reply(ctx, m, replyTo, &Record{Outcome: OutcomeOK})
		}
		req.Reply = rec.Reply
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
	out := p.run(context.WithValue(ctx, requestKey{}, req), req, h)
	// A compensation is retried until it succeeds, so only its success is
	// final; a step's definitive failure is final too.
	if out.Outcome == OutcomeRetry || (req.Compensation && out.Outcome != OutcomeOK) {
		if err := p.store.Release(ctx, req.Key, p.owner); err != nil {
			return err
		}
	} else if err := p.store.Complete(ctx, req.Key, p.owner, out); err != nil {
		return err
	}
	return p.reply(ctx, m, replyTo, out)
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
	if err := p.bus.SendCommand(ctx, replyTo, m); err != nil {
		return fmt.Errorf("saga: reply to %s: %w", cmd.ID, err)
	}
	return nil
}
