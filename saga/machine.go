package saga

import (
	"encoding/json"
	"fmt"
	"time"
)

// Actions of a step command.
const (
	actionDo   = "do"
	actionUndo = "undo"
)

// Outcomes of a participant's reply.
const (
	// OutcomeOK: the command took effect; the reply carries its result.
	OutcomeOK = "ok"
	// OutcomeFailed: the command failed for good and left no effect.
	OutcomeFailed = "failed"
	// OutcomeRetry: the command failed transiently and left no effect; the
	// orchestrator tries again within the step's retry policy.
	OutcomeRetry = "retry"
)

// reply is a participant's answer as the orchestrator reads it.
type reply struct {
	SagaID  string
	Step    string
	Action  string
	Attempt int
	Outcome string
	Data    json.RawMessage
	Error   string
}

// machine applies one transition to an instance. Its methods only change the
// instance: the orchestrator persists it, then sends in.Outbox.
type machine struct {
	def  *Definition
	in   *Instance // the instance being changed, Outbox emptied
	prev *Instance // the instance as loaded, for reading only
	now  time.Time
	by   string // the orchestrator instance, for the history of requests
}

func (m *machine) record(kind, step string, attempt int, errMsg string) {
	m.in.History = append(m.in.History, Event{Time: m.now, Kind: kind, Step: step, Attempt: attempt, Error: errMsg})
}

// event records a lifecycle event and queues its publication.
func (m *machine) event(kind string, step int, errMsg string) {
	name := ""
	if step >= 0 {
		name = m.in.Steps[step].Name
	}
	m.record(kind, name, 0, errMsg)
	m.in.Outbox = append(m.in.Outbox, Outgoing{Kind: kind, Step: step, Attempt: len(m.in.History), Error: errMsg})
}

func (m *machine) send(action string, i, attempt int) {
	st := &m.in.Steps[i]
	if attempt == 1 {
		st.AttemptBase = 0
	}
	st.Attempt, st.Waiting = attempt, false
	st.Deadline = m.now.Add(m.def.Steps[i].Timeout)
	m.record("step."+action+".sent", st.Name, attempt, "")
	m.in.Outbox = append(m.in.Outbox, Outgoing{Kind: action, Step: i, Attempt: attempt})
}

// settle sets the instance's Deadline to the earliest deadline of its active
// steps, after a transition.
func (m *machine) settle() {
	in := m.in
	in.Deadline = time.Time{}
	for i := range in.Steps {
		st := &in.Steps[i]
		if st.State != StepRunning && st.State != StepCompensating || !in.State.Active() {
			st.Deadline, st.Waiting = time.Time{}, false
			continue
		}
		if !st.Deadline.IsZero() && (in.Deadline.IsZero() || st.Deadline.Before(in.Deadline)) {
			in.Deadline = st.Deadline
		}
	}
}

// start initializes a new instance and sends its first step.
func (m *machine) start() {
	in := m.in
	in.State = Running
	in.Steps = make([]StepStatus, len(m.def.Steps))
	for i, s := range m.def.Steps {
		in.Steps[i] = StepStatus{Name: s.Name, State: StepPending}
	}
	if m.def.Timeout > 0 {
		in.SagaDeadline = m.now.Add(m.def.Timeout)
	}
	m.event(EventStarted, -1, "")
	m.beginGroup(0)
}

// beginGroup starts the steps of the group that begins with step i (one
// step, or a parallel group), or completes the saga after its last step.
func (m *machine) beginGroup(i int) {
	in := m.in
	if i == len(in.Steps) {
		in.State = Completed
		m.event(EventCompleted, -1, "")
		return
	}
	lo, hi := m.def.group(i)
	in.Current = lo
	// Every input is computed before any command goes out: a step whose
	// input fails fails the group before its siblings start.
	payloads := make([]json.RawMessage, hi-lo)
	for j := lo; j < hi; j++ {
		if m.def.Steps[j].Event != "" {
			continue
		}
		payload, err := m.input(j)
		if err != nil {
			st := &in.Steps[j]
			st.Started, st.State, st.Error, st.Finished = m.now, StepFailed, err.Error(), m.now
			m.event(EventStepFailed, j, st.Error)
			m.compensate(fmt.Sprintf("step %s: %v", st.Name, err))
			return
		}
		payloads[j-lo] = payload
	}
	if m.def.Steps[lo].Kind == Retriable && !in.SagaDeadline.IsZero() {
		// Past the point of no return: the saga can only go forward.
		in.SagaDeadline = time.Time{}
	}
	for j := lo; j < hi; j++ {
		st := &in.Steps[j]
		st.Started, st.State = m.now, StepRunning
		if ev := m.def.Steps[j].Event; ev != "" {
			st.Deadline = m.now.Add(m.def.Steps[j].Timeout)
			m.record("step.wait", st.Name, 0, ev)
			continue
		}
		st.Input, st.Attempts = payloads[j-lo], 1
		m.send(actionDo, j, 1)
	}
	// Events that arrived before the saga reached its wait steps.
	for j := lo; j < hi; j++ {
		ev := m.def.Steps[j].Event
		if data, ok := in.Received[ev]; ok && ev != "" && in.Steps[j].State == StepRunning {
			delete(in.Received, ev)
			m.stepDone(j, data)
		}
	}
}

// stepDone completes step i with its reply, and starts the next group once
// every step of i's group completed.
func (m *machine) stepDone(i int, reply json.RawMessage) {
	in := m.in
	st := &in.Steps[i]
	st.State, st.Reply, st.Error, st.Finished = StepCompleted, reply, "", m.now
	m.event(EventStepCompleted, i, "")
	lo, hi := m.def.group(i)
	for j := lo; j < hi; j++ {
		if in.Steps[j].State != StepCompleted {
			return
		}
	}
	m.beginGroup(hi)
}

// forwardOnly reports whether the saga is past its point of no return: its
// current step is retriable, so every step before it succeeded.
func (m *machine) forwardOnly() bool {
	return m.in.State == Running && m.def.Steps[m.in.Current].Kind == Retriable
}

func (m *machine) input(i int) (payload json.RawMessage, err error) {
	fn := m.def.Steps[i].Input
	if fn == nil {
		return m.in.Data, nil
	}
	in := Input{SagaID: m.in.ID, Data: m.in.Data, Replies: map[string]json.RawMessage{}}
	lo, _ := m.def.group(i)
	for _, st := range m.in.Steps[:lo] {
		if st.State == StepCompleted {
			in.Replies[st.Name] = st.Reply
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("input function panicked: %v", r)
		}
	}()
	v, err := fn(in)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("input: encode: %w", err)
	}
	return b, nil
}

// onReply applies a participant's reply; it reports false for a reply that
// changes nothing (a duplicate, or late for a step that moved on).
func (m *machine) onReply(r *reply) bool {
	in := m.in
	i := m.def.stepIndex(r.Step)
	if i < 0 || m.def.Steps[i].Event != "" {
		return false
	}
	st := &in.Steps[i]
	current := r.Attempt == st.Attempt && !st.Waiting
	switch r.Action {
	case actionDo:
		if in.State != Running || st.State != StepRunning {
			return false
		}
		switch r.Outcome {
		case OutcomeOK:
			m.stepDone(i, r.Data)
		case OutcomeFailed:
			if m.forwardOnly() {
				if !current {
					return false
				}
				m.record("step.do.retry", st.Name, r.Attempt, r.Error)
				st.Error = r.Error
				m.retryOrFail(i, m.def.Steps[i].Retry, r.Error)
				break
			}
			st.State, st.Error, st.Finished = StepFailed, r.Error, m.now
			m.event(EventStepFailed, i, r.Error)
			m.compensate(fmt.Sprintf("step %s failed: %s", st.Name, r.Error))
		default:
			if !current {
				return false
			}
			m.record("step.do.retry", st.Name, r.Attempt, r.Error)
			st.Error = r.Error
			m.retryOrFail(i, m.def.Steps[i].Retry, r.Error)
		}
	case actionUndo:
		if in.State != Compensating || st.State != StepCompensating {
			return false
		}
		if r.Outcome == OutcomeOK {
			st.State, st.Error, st.Finished = StepCompensated, "", m.now
			m.event(EventStepCompensated, i, "")
			m.groupCompensated(i)
			return true
		}
		if !current {
			return false
		}
		m.record("step.undo.retry", st.Name, r.Attempt, r.Error)
		st.Error = r.Error
		m.retryOrFail(i, m.def.CompensationRetry, r.Error)
	default:
		return false
	}
	return true
}

// onEvent applies an event of type typ correlated to the saga: it completes
// the wait step for it, or keeps it for a wait step not reached yet. It
// reports false for an event that changes nothing.
func (m *machine) onEvent(typ string, data json.RawMessage) bool {
	in := m.in
	if in.State != Running {
		return false
	}
	for i, s := range m.def.Steps {
		if s.Event != typ {
			continue
		}
		st := &in.Steps[i]
		switch st.State {
		case StepRunning:
			m.record("event.received", st.Name, 0, "")
			m.stepDone(i, data)
			return true
		case StepPending:
			if _, ok := in.Received[typ]; ok {
				return false
			}
			if in.Received == nil {
				in.Received = map[string]json.RawMessage{}
			}
			in.Received[typ] = data
			m.record("event.received", st.Name, 0, "before the step began")
			return true
		}
		return false
	}
	return false
}

// retryOrFail handles a failed attempt of step i's current command: wait
// and try again while the policy allows, otherwise fail the step (forward)
// or its compensation.
func (m *machine) retryOrFail(i int, p Retry, errMsg string) {
	in := m.in
	st := &in.Steps[i]
	if m.triesLeft(i, p) {
		st.Waiting = true
		st.Deadline = m.now.Add(p.delay(st.Attempt - st.AttemptBase))
		return
	}
	if in.State == Running {
		st.State, st.Finished = StepFailed, m.now
		msg := fmt.Sprintf("gave up after %d attempts: %s", st.Attempt-st.AttemptBase, errMsg)
		m.event(EventStepFailed, i, msg)
		m.compensate(fmt.Sprintf("step %s %s", st.Name, msg))
		return
	}
	st.State = StepCompensationFailed
	st.Error = fmt.Sprintf("compensation gave up after %d attempts: %s", st.Attempt-st.AttemptBase, errMsg)
	in.Error = fmt.Sprintf("compensation of step %s gave up after %d attempts: %s", st.Name, st.Attempt-st.AttemptBase, errMsg)
	m.groupCompensated(i)
}

// compensate starts undoing, from the current group backwards.
func (m *machine) compensate(reason string) {
	in := m.in
	lo, hi := m.def.group(in.Current)
	for j := lo; j < hi; j++ {
		st := &in.Steps[j]
		if st.State != StepRunning {
			continue
		}
		// Interrupted while its command may be running: it may take
		// effect, so it is undone too (participants turn an undo that
		// overtakes its command into a no-op that also blocks the
		// command). A step waiting for an event has nothing to undo.
		if !st.Waiting && m.def.Steps[j].Event == "" {
			st.Uncertain = true
		}
		st.State, st.Error, st.Finished = StepFailed, reason, m.now
	}
	in.State, in.Reason = Compensating, reason
	m.event(EventCompensating, -1, reason)
	m.nextCompensation(hi - 1)
}

// nextCompensation sends the compensations of the group that ends with
// step last, at once, or of the first group before it that has any; with
// none left, the saga is Compensated.
func (m *machine) nextCompensation(last int) {
	in := m.in
	for last >= 0 {
		lo, _ := m.def.group(last)
		sent := false
		for j := last; j >= lo; j-- {
			st := &in.Steps[j]
			if st.State != StepCompleted && !(st.State == StepFailed && st.Uncertain) {
				continue
			}
			if m.def.Steps[j].Compensation == "" {
				m.record("step.undo.skipped", st.Name, 0, "no compensation defined")
				continue
			}
			st.State, st.CompensationAttempts, st.Error = StepCompensating, 1, ""
			m.send(actionUndo, j, 1)
			sent = true
		}
		if sent {
			in.Current = lo
			return
		}
		last = lo - 1
	}
	in.State = Compensated
	m.event(EventCompensated, -1, in.Reason)
}

// groupCompensated goes on once no compensation of step i's group is in
// flight: with the previous group, or to Failed when one gave up.
func (m *machine) groupCompensated(i int) {
	in := m.in
	lo, hi := m.def.group(i)
	gaveUp := -1
	for j := lo; j < hi; j++ {
		switch in.Steps[j].State {
		case StepCompensating:
			return
		case StepCompensationFailed:
			gaveUp = j
		}
	}
	if gaveUp >= 0 {
		in.State, in.Current = Failed, lo
		m.event(EventFailed, gaveUp, in.Error)
		return
	}
	m.nextCompensation(lo - 1)
}

// onDue handles deadlines that passed: the saga's, retry backoffs that
// ended, attempts that went unanswered, waits for events that ended.
func (m *machine) onDue() bool {
	in := m.in
	if !in.State.Active() {
		return false
	}
	if in.State == Running && !in.SagaDeadline.IsZero() && !m.now.Before(in.SagaDeadline) {
		m.compensate("saga timed out")
		return true
	}
	changed := false
	for i := range in.Steps {
		st := &in.Steps[i]
		// An earlier step's deadline may have changed this one's state.
		if !in.State.Active() || st.Deadline.IsZero() || m.now.Before(st.Deadline) ||
			(st.State != StepRunning && st.State != StepCompensating) {
			continue
		}
		changed = true
		m.stepDue(i)
	}
	return changed
}

// stepDue handles step i's passed deadline.
func (m *machine) stepDue(i int) {
	st := &m.in.Steps[i]
	action := actionDo
	if st.State == StepCompensating {
		action = actionUndo
	}
	if st.Waiting {
		m.bump(i, action)
		return
	}
	if ev := m.def.Steps[i].Event; ev != "" {
		msg := fmt.Sprintf("no %s event within %v", ev, m.def.Steps[i].Timeout)
		st.State, st.Error, st.Finished = StepFailed, msg, m.now
		m.event(EventStepFailed, i, msg)
		m.compensate(fmt.Sprintf("step %s: %s", st.Name, msg))
		return
	}
	m.record("step."+action+".timeout", st.Name, st.Attempt, "")
	if action == actionDo {
		st.Uncertain = true
		if m.triesLeft(i, m.def.Steps[i].Retry) {
			m.bump(i, action)
			return
		}
		m.retryOrFail(i, m.def.Steps[i].Retry, "timed out")
		return
	}
	m.retryOrFail(i, m.def.CompensationRetry, "timed out")
}

// triesLeft reports whether policy p allows another attempt of step i's
// current command; a retriable step always has one.
func (m *machine) triesLeft(i int, p Retry) bool {
	st := &m.in.Steps[i]
	return m.forwardOnly() || st.Attempt-st.AttemptBase < p.attempts()
}

// bump sends the next attempt of step i's current command.
func (m *machine) bump(i int, action string) {
	st := &m.in.Steps[i]
	if action == actionDo {
		st.Attempts++
	} else {
		st.CompensationAttempts++
	}
	m.send(action, i, st.Attempt+1)
}

// cancel stops a running saga and compensates it, or reports why it cannot
// (ErrNotRunning, ErrPastPivot) and changes nothing. kind is its history
// entry.
func (m *machine) cancel(kind string, req *ManagerRequest) error {
	in := m.in
	if in.State != Running {
		return fmt.Errorf("saga: cancel %s (%s): %w", in.ID, in.State, ErrNotRunning)
	}
	if m.forwardOnly() {
		return fmt.Errorf("saga: cancel %s (at step %s): %w", in.ID, in.Steps[in.Current].Name, ErrPastPivot)
	}
	m.recordRequest(kind, req, "")
	m.compensate("cancelled")
	return nil
}

// recordRequest adds the history entry kind about req (nil: a direct call
// of Cancel or Retry).
func (m *machine) recordRequest(kind string, req *ManagerRequest, errMsg string) {
	ev := Event{Time: m.now, Kind: kind, Error: errMsg}
	if req != nil {
		ev.Request, ev.By = req.ID, m.by
	}
	m.in.History = append(m.in.History, ev)
}

// retry resumes compensating a Failed saga at the steps whose compensation
// gave up, with a fresh budget of attempts, or reports ErrNotFailed and
// changes nothing. kind, when set, is its history entry.
func (m *machine) retry(kind string, req *ManagerRequest) error {
	in := m.in
	if in.State != Failed {
		return fmt.Errorf("saga: retry %s (%s): %w", in.ID, in.State, ErrNotFailed)
	}
	if kind != "" {
		m.recordRequest(kind, req, "")
	}
	in.State, in.Error = Compensating, ""
	lo, hi := m.def.group(in.Current)
	for j := lo; j < hi; j++ {
		st := &in.Steps[j]
		if st.State != StepCompensationFailed {
			continue
		}
		st.State, st.Error = StepCompensating, ""
		st.CompensationAttempts++
		m.record("retry", st.Name, 0, "")
		// Attempt numbers go on, so that the commands' ids stay unique;
		// the budget starts afresh.
		base := st.Attempt
		m.send(actionUndo, j, st.Attempt+1)
		st.AttemptBase = base
	}
	return nil
}

// applyRequest applies the pending manager request with the rules of
// Cancel and Retry, clears it and records its outcome: "cancel.applied" or
// "cancel.refused" with the reason (the same for "retry").
func (m *machine) applyRequest() {
	req := m.in.Request
	m.in.Request = nil
	var err error
	switch req.Kind {
	case CancelRequest:
		err = m.cancel(string(req.Kind)+".applied", req)
	case RetryRequest:
		err = m.retry(string(req.Kind)+".applied", req)
	default:
		err = fmt.Errorf("saga: %s %s: %w", req.Kind, m.in.ID, ErrUnknownRequest)
	}
	if err != nil {
		m.recordRequest(string(req.Kind)+".refused", req, err.Error())
	}
}
