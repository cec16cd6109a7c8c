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

func (m *machine) send(action string, step, attempt int) {
	if attempt == 1 {
		m.in.AttemptBase = 0
	}
	m.in.Current, m.in.Attempt, m.in.Waiting = step, attempt, false
	m.in.Deadline = m.now.Add(m.def.Steps[step].Timeout)
	m.record("step."+action+".sent", m.in.Steps[step].Name, attempt, "")
	m.in.Outbox = append(m.in.Outbox, Outgoing{Kind: action, Step: step, Attempt: attempt})
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
	m.beginStep(0)
}

func (m *machine) beginStep(i int) {
	in := m.in
	if i == len(in.Steps) {
		in.State, in.Deadline, in.Waiting = Completed, time.Time{}, false
		m.event(EventCompleted, -1, "")
		return
	}
	st := &in.Steps[i]
	in.Current = i
	st.Started = m.now
	payload, err := m.input(i)
	if err != nil {
		st.State, st.Error, st.Finished = StepFailed, err.Error(), m.now
		m.event(EventStepFailed, i, st.Error)
		m.compensate(fmt.Sprintf("step %s: %v", st.Name, err))
		return
	}
	st.Input, st.State, st.Attempts = payload, StepRunning, 1
	if m.def.Steps[i].Kind == Retriable && !in.SagaDeadline.IsZero() {
		// Past the point of no return: the saga can only go forward.
		in.SagaDeadline = time.Time{}
	}
	m.send(actionDo, i, 1)
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
	for _, st := range m.in.Steps[:i] {
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
	if i < 0 || in.Current != i {
		return false
	}
	st := &in.Steps[i]
	current := r.Attempt == in.Attempt && !in.Waiting
	switch r.Action {
	case actionDo:
		if in.State != Running || st.State != StepRunning {
			return false
		}
		switch r.Outcome {
		case OutcomeOK:
			st.State, st.Reply, st.Error, st.Finished = StepCompleted, r.Data, "", m.now
			m.event(EventStepCompleted, i, "")
			m.beginStep(i + 1)
		case OutcomeFailed:
			if m.forwardOnly() {
				if !current {
					return false
				}
				m.record("step.do.retry", st.Name, r.Attempt, r.Error)
				st.Error = r.Error
				m.retryOrFail(m.def.Steps[i].Retry, r.Error)
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
			m.retryOrFail(m.def.Steps[i].Retry, r.Error)
		}
	case actionUndo:
		if in.State != Compensating || st.State != StepCompensating {
			return false
		}
		if r.Outcome == OutcomeOK {
			st.State, st.Error, st.Finished = StepCompensated, "", m.now
			m.event(EventStepCompensated, i, "")
			m.nextCompensation(i - 1)
			return true
		}
		if !current {
			return false
		}
		m.record("step.undo.retry", st.Name, r.Attempt, r.Error)
		st.Error = r.Error
		m.retryOrFail(m.def.CompensationRetry, r.Error)
	default:
		return false
	}
	return true
}

// retryOrFail handles a failed attempt of the current command: wait and try
// again while the policy allows, otherwise fail the step (forward) or the
// saga (compensation).
func (m *machine) retryOrFail(p Retry, errMsg string) {
	in := m.in
	st := &in.Steps[in.Current]
	if m.triesLeft(p) {
		in.Waiting = true
		in.Deadline = m.now.Add(p.delay(in.Attempt - in.AttemptBase))
		return
	}
	if in.State == Running {
		st.State, st.Finished = StepFailed, m.now
		msg := fmt.Sprintf("gave up after %d attempts: %s", in.Attempt-in.AttemptBase, errMsg)
		m.event(EventStepFailed, in.Current, msg)
		m.compensate(fmt.Sprintf("step %s %s", st.Name, msg))
		return
	}
	st.State = StepCompensationFailed
	in.State, in.Deadline, in.Waiting = Failed, time.Time{}, false
	in.Error = fmt.Sprintf("compensation of step %s gave up after %d attempts: %s", st.Name, in.Attempt-in.AttemptBase, errMsg)
	m.event(EventFailed, in.Current, in.Error)
}

// compensate starts undoing, from the current step backwards.
func (m *machine) compensate(reason string) {
	in := m.in
	st := &in.Steps[in.Current]
	if st.State == StepRunning {
		// Interrupted while the command may be running: it may take
		// effect, so it is undone too (participants turn an undo that
		// overtakes its command into a no-op that also blocks the command).
		if !in.Waiting {
			st.Uncertain = true
		}
		st.State, st.Error, st.Finished = StepFailed, reason, m.now
	}
	in.State, in.Reason, in.Waiting = Compensating, reason, false
	m.event(EventCompensating, -1, reason)
	m.nextCompensation(in.Current)
}

func (m *machine) nextCompensation(from int) {
	in := m.in
	for j := from; j >= 0; j-- {
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
		return
	}
	in.State, in.Deadline, in.Waiting = Compensated, time.Time{}, false
	m.event(EventCompensated, -1, in.Reason)
}

// onDue handles deadlines that passed: the saga's, a retry backoff that
// ended, an attempt that went unanswered.
func (m *machine) onDue() bool {
	in := m.in
	if !in.State.Active() {
		return false
	}
	if in.State == Running && !in.SagaDeadline.IsZero() && !m.now.Before(in.SagaDeadline) {
		m.compensate("saga timed out")
		return true
	}
	if in.Deadline.IsZero() || m.now.Before(in.Deadline) {
		return false
	}
	st := &in.Steps[in.Current]
	action := actionDo
	if in.State == Compensating {
		action = actionUndo
	}
	if in.Waiting {
		m.bump(st, action)
		return true
	}
	m.record("step."+action+".timeout", st.Name, in.Attempt, "")
	if action == actionDo {
		st.Uncertain = true
		if m.triesLeft(m.def.Steps[in.Current].Retry) {
			m.bump(st, action)
			return true
		}
		m.retryOrFail(m.def.Steps[in.Current].Retry, "timed out")
		return true
	}
	m.retryOrFail(m.def.CompensationRetry, "timed out")
	return true
}

// triesLeft reports whether policy p allows another attempt of the current
// command; a retriable step always has one.
func (m *machine) triesLeft(p Retry) bool {
	return m.forwardOnly() || m.in.Attempt-m.in.AttemptBase < p.attempts()
}

// bump sends the next attempt of the current command.
func (m *machine) bump(st *StepStatus, action string) {
	if action == actionDo {
		st.Attempts++
	} else {
		st.CompensationAttempts++
	}
	m.send(action, m.in.Current, m.in.Attempt+1)
}

func (m *machine) cancel() bool {
	if m.in.State != Running {
		return false
	}
	m.record("cancel", "", 0, "")
	m.compensate("cancelled")
	return true
}

// retry resumes compensating a Failed saga at the step whose compensation
// gave up, with a fresh budget of attempts.
func (m *machine) retry() {
	in := m.in
	st := &in.Steps[in.Current]
	in.State, in.Error = Compensating, ""
	st.State = StepCompensating
	st.CompensationAttempts++
	m.record("retry", st.Name, 0, "")
	// Attempt numbers go on, so that the commands' ids stay unique; the
	// budget starts afresh.
	m.send(actionUndo, in.Current, in.Attempt+1)
	in.AttemptBase = in.Attempt - 1
}
