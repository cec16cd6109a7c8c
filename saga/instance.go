package saga

import (
	"encoding/json"
	"maps"
	"time"
)

// State is the state of a saga instance.
type State string

// The states of a saga. Running and Compensating are active: the
// orchestrator drives them. The others are final, except that Retry moves a
// Failed saga back to Compensating.
const (
	// Running: steps are being executed in order (a parallel group's
	// steps at once).
	Running State = "running"
	// Compensating: a step failed for good, timed out or the saga was
	// cancelled; completed steps are being undone in reverse order.
	Compensating State = "compensating"
	// Completed: every step succeeded.
	Completed State = "completed"
	// Compensated: every step that took effect was undone.
	Compensated State = "compensated"
	// Failed: a compensation kept failing; the saga needs attention. See
	// Instance.Error, and Orchestrator.Retry to resume compensating.
	Failed State = "failed"
)

// Active reports whether the orchestrator still drives a saga in state s.
func (s State) Active() bool { return s == Running || s == Compensating }

// StepState is the state of one step of a saga instance.
type StepState string

// The states of a step.
const (
	StepPending            StepState = "pending"
	StepRunning            StepState = "running"
	StepCompleted          StepState = "completed"
	StepFailed             StepState = "failed"
	StepCompensating       StepState = "compensating"
	StepCompensated        StepState = "compensated"
	StepCompensationFailed StepState = "compensation_failed"
)

// Instance is a saga instance: its state, every step's state and its
// history. Stores persist it whole; Version guards every update.
type Instance struct {
	ID   string
	Name string
	// DefinitionVersion is the Definition.Version the instance runs on.
	DefinitionVersion int `json:",omitempty"`
	State             State
	// Data is the saga's data as given to Start, JSON encoded.
	Data json.RawMessage
	// Steps has one entry per step of the definition, in order.
	Steps []StepStatus
	// Current is the index of the step being executed (Running) or
	// compensated (Compensating, Failed); for a parallel group, of the
	// group's first step. Each step's attempts and deadline are in its
	// StepStatus.
	Current int
	// Deadline is the earliest deadline of the active steps: when an
	// attempt times out, a retry is due or a wait for an event ends.
	Deadline time.Time
	// Received holds, by type, the events that arrived for wait steps the
	// saga had not reached yet.
	Received map[string]json.RawMessage `json:",omitempty"`
	// SagaDeadline is when the forward run times out (Definition.Timeout);
	// zero without one.
	SagaDeadline time.Time
	// Reason says why the saga compensates: the failed step's error, a
	// timeout or "cancelled".
	Reason string
	// Error is the last compensation error of a Failed saga.
	Error   string
	History []Event
	// Outbox is what the last transition sends: an orchestrator that takes
	// the saga over from a dead one sends it again.
	Outbox []Outgoing
	// Request is the manager request (RequestCancel, RequestRetry) that
	// waits for an orchestrator to apply it; nil when none does.
	Request *ManagerRequest `json:",omitempty"`
	// TraceParent and TraceState are the W3C trace context of the saga's
	// trace (see Options.TracerProvider): the commands and events of every
	// transition continue it, in whichever orchestrator instance runs the
	// transition, after a restart or a takeover too. Empty when the saga
	// was started without a span.
	TraceParent string `json:",omitempty"`
	TraceState  string `json:",omitempty"`

	Created time.Time
	Updated time.Time

	// Version counts persisted transitions; stores update an instance only
	// when its version is still the one loaded.
	Version int64
	// Owner is the orchestrator instance holding the saga's lease until
	// LeaseUntil.
	Owner      string
	LeaseUntil time.Time
}

// StepStatus is one step of a saga instance.
type StepStatus struct {
	Name  string
	State StepState
	// Attempts and CompensationAttempts count the commands sent.
	Attempts             int `json:",omitempty"`
	CompensationAttempts int `json:",omitempty"`
	// Attempt is the number of the step's current command (or
	// compensation) attempt; command ids carry it.
	Attempt int `json:",omitempty"`
	// AttemptBase is the number of attempts made before Retry resumed the
	// step's compensation; the retry policy counts from it.
	AttemptBase int `json:",omitempty"`
	// Waiting is true while the step waits out a retry backoff rather
	// than a reply.
	Waiting bool `json:",omitempty"`
	// Deadline is, while the step runs or compensates, when its current
	// attempt (or its wait for an event) times out, or when its next
	// attempt is due while Waiting.
	Deadline time.Time `json:",omitzero"`
	// Input is the payload sent with the step's commands.
	Input json.RawMessage `json:",omitempty"`
	// Reply is the participant's reply.
	Reply json.RawMessage `json:",omitempty"`
	Error string          `json:",omitempty"`
	// Uncertain is true when an attempt went unanswered: the step may have
	// taken effect, so it is compensated if the saga compensates.
	Uncertain bool      `json:",omitempty"`
	Started   time.Time `json:",omitzero"`
	Finished  time.Time `json:",omitzero"`
}

// Event is one entry of a saga's history.
type Event struct {
	Time    time.Time
	Kind    string // an event type such as EventStepCompleted, or "step.sent"
	Step    string `json:",omitempty"`
	Attempt int    `json:",omitempty"`
	Error   string `json:",omitempty"`
	// Request is the id of the manager request the entry is about:
	// "cancel.requested", "cancel.applied", "cancel.refused" and the same
	// for "retry".
	Request string `json:",omitempty"`
	// By is who made the request ("….requested"), or the orchestrator
	// instance that applied or refused it.
	By string `json:",omitempty"`
}

// Outgoing is a message a transition sends: a step command (Step set) or a
// lifecycle event.
type Outgoing struct {
	Kind    string // "do", "undo" or a lifecycle event type
	Step    int    `json:",omitempty"`
	Attempt int    `json:",omitempty"`
	Error   string `json:",omitempty"`
}

// WakeAt is when the orchestrator must next look at the instance without a
// reply: the earliest of its deadlines; with a pending Request, whatever the
// state, a time long past (so that the next poll applies it, before
// anything else and whatever the requester's clock says); zero for a final
// state with no request.
func (in *Instance) WakeAt() time.Time {
	var w time.Time
	if in.State.Active() {
		w = in.Deadline
		if in.State == Running && !in.SagaDeadline.IsZero() && (w.IsZero() || in.SagaDeadline.Before(w)) {
			w = in.SagaDeadline
		}
	}
	if in.Request != nil {
		// Due at once, whatever the clocks of the requester and the
		// orchestrators say: the earliest time a store keeps.
		return requestWake
	}
	return w
}

// definitionVersion is the version of the instance's definition; instances
// persisted before definitions had versions ran on version 1.
func (in *Instance) definitionVersion() int { return max(in.DefinitionVersion, 1) }

func (in *Instance) clone() *Instance {
	c := *in
	c.Steps = append([]StepStatus(nil), in.Steps...)
	c.History = append([]Event(nil), in.History...)
	c.Outbox = append([]Outgoing(nil), in.Outbox...)
	if in.Received != nil {
		c.Received = maps.Clone(in.Received)
	}
	if in.Request != nil {
		r := *in.Request
		c.Request = &r
	}
	return &c
}

// requestWake is the WakeAt of an instance with a pending request: the
// first nanosecond of 1970, which stores keep as a set (non-zero) time.
var requestWake = time.Unix(0, 1)
