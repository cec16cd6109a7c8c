package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Definition describes a saga: a name and ordered steps. Register it with
// Orchestrator.Register, which validates it.
type Definition struct {
	// Name identifies the saga type; Orchestrator.Start refers to it.
	Name string
	// Version numbers the revisions of a definition; zero means 1.
	// Orchestrator.Start runs the highest version registered, and every
	// instance runs to its end on the version it started with, so a changed
	// definition gets a new version while the old one stays registered
	// until no instance runs it.
	Version int
	// Steps run in order, except that adjacent steps with the same Group
	// run at once; the saga completes when the last one succeeds.
	Steps []Step
	// Timeout bounds the whole forward run: when it passes before the last
	// step succeeded, the saga compensates. Zero means no saga timeout.
	Timeout time.Duration
	// CompensationRetry governs every compensation command: a compensation
	// that fails or times out is sent again after Backoff (doubling each
	// time) until it succeeds or Attempts are spent, which fails the saga
	// and leaves it for a person to look at. Default 10 attempts, 1s.
	CompensationRetry Retry
}

// StepKind places a step in the classic saga taxonomy.
type StepKind int

// The kinds of steps. A definition's steps go compensable first, then at
// most one pivot, then retriable ones.
const (
	// Compensable (the default): a failure of a later step undoes it.
	Compensable StepKind = iota
	// Pivot: the go/no-go step. If it fails, the compensable steps before
	// it are undone; once it succeeds the saga can only go forward. It has
	// no compensation.
	Pivot
	// Retriable: a step after the point of no return, attempted until it
	// succeeds — Retry.Attempts is not a limit, and even a failure marked
	// with Fail is retried, after Retry.Backoff (default 1s) doubling up to
	// a minute.
	// It has no compensation. Once the saga reaches its first retriable
	// step, Cancel fails with ErrPastPivot and Definition.Timeout no
	// longer applies.
	Retriable
)

func (k StepKind) String() string {
	switch k {
	case Compensable:
		return "compensable"
	case Pivot:
		return "pivot"
	case Retriable:
		return "retriable"
	}
	return fmt.Sprintf("StepKind(%d)", int(k))
}

// Step is one command to a participant service and the command that undoes
// it, or, with Event set, a wait for an event.
type Step struct {
	// Name is unique within the definition; it may not contain '/'.
	Name string
	// Kind is Compensable (default), Pivot or Retriable.
	Kind StepKind
	// Group makes adjacent steps with the same non-empty Group a parallel
	// group: they start together (each with its own timeout and retries),
	// and the saga moves on when every one of them succeeded. When one
	// fails, the others are interrupted and every step of the group that
	// took effect, or may have, is compensated — at once, then the groups
	// before it in reverse order. A group holds compensable steps only.
	Group string
	// Event makes the step wait for an event of this type whose
	// CorrelationID is the saga's id, instead of sending a command: the
	// event's data becomes the step's reply. Timeout bounds the wait (it
	// is persisted, and fires after a restart too); when it passes, the
	// step fails and the saga compensates. An event that arrives before
	// the saga reached the step is kept for it. A wait step has no Service,
	// Command, Compensation or Retry, and may not be retriable.
	Event string
	// Service is the participant service the commands are sent to.
	Service string
	// Command is the message type of the step's command.
	Command string
	// Compensation is the message type of the command that undoes the step.
	// Every compensable step followed by a step that can fail (compensable
	// or pivot) needs one; pivot and retriable steps have none.
	Compensation string
	// Timeout is how long the orchestrator waits for a reply to each attempt
	// (and to each compensation attempt), or for the event of a wait step.
	// Required.
	Timeout time.Duration
	// Retry says how often the step is attempted when the participant
	// reports a transient failure or does not reply in time.
	Retry Retry
	// Input builds the command's payload from the saga's data and the
	// replies of earlier steps. nil sends the saga's data. An error fails
	// the step for good. The payload is computed once and persisted:
	// retries and compensations send the same bytes.
	Input func(in Input) (any, error)
}

// Retry is a retry policy: Attempts counts tries, the first included (zero
// means one); Backoff is the wait before the second try, doubled for each
// further one.
type Retry struct {
	Attempts int
	Backoff  time.Duration
}

func (r Retry) attempts() int { return max(r.Attempts, 1) }

// delay is the wait after attempt n failed.
func (r Retry) delay(n int) time.Duration {
	d := r.Backoff
	for i := 1; i < n && d < time.Minute; i++ {
		d *= 2
	}
	return d
}

// Input is what a step's Input function sees.
type Input struct {
	// SagaID is the saga instance's id.
	SagaID string
	// Data is the saga's data as given to Start, JSON encoded.
	Data json.RawMessage
	// Replies holds the JSON replies of the steps that completed, by step
	// name.
	Replies map[string]json.RawMessage
}

// Decode decodes the saga's data into v.
func (in Input) Decode(v any) error {
	if err := json.Unmarshal(in.Data, v); err != nil {
		return fmt.Errorf("saga: decode data: %w", err)
	}
	return nil
}

// Reply decodes the reply of the earlier step into v.
func (in Input) Reply(step string, v any) error {
	r, ok := in.Replies[step]
	if !ok {
		return fmt.Errorf("saga: no reply from step %q", step)
	}
	if err := json.Unmarshal(r, v); err != nil {
		return fmt.Errorf("saga: decode reply of step %q: %w", step, err)
	}
	return nil
}

// ErrInvalidDefinition is matched (errors.Is) by every problem Validate
// reports; errors.As with *DefinitionError gives the details.
var ErrInvalidDefinition = errors.New("invalid saga definition")

// DefinitionError is one problem of a definition.
type DefinitionError struct {
	Saga    string
	Step    string // empty when the problem is not about one step
	Problem string
}

func (e *DefinitionError) Error() string {
	if e.Step != "" {
		return fmt.Sprintf("saga: definition %q, step %q: %s", e.Saga, e.Step, e.Problem)
	}
	return fmt.Sprintf("saga: definition %q: %s", e.Saga, e.Problem)
}

// Is reports whether target is ErrInvalidDefinition.
func (e *DefinitionError) Is(target error) bool { return target == ErrInvalidDefinition }

// Validate reports every problem of d at once, joined with errors.Join; each
// is a *DefinitionError matching ErrInvalidDefinition.
func (d *Definition) Validate() error {
	var errs []error
	bad := func(step, format string, args ...any) {
		errs = append(errs, &DefinitionError{Saga: d.Name, Step: step, Problem: fmt.Sprintf(format, args...)})
	}
	if strings.TrimSpace(d.Name) == "" {
		bad("", "empty name")
	}
	if len(d.Steps) == 0 {
		bad("", "no steps")
	}
	if d.Version < 0 {
		bad("", "negative version %d", d.Version)
	}
	if d.Timeout < 0 {
		bad("", "negative timeout %v", d.Timeout)
	}
	if d.CompensationRetry.Attempts < 0 || d.CompensationRetry.Backoff < 0 {
		bad("", "negative compensation retry")
	}
	seen := map[string]bool{}
	groups := map[string]bool{}
	awaited := map[string]bool{}
	pivots := 0
	for i, s := range d.Steps {
		name := s.Name
		switch {
		case name == "":
			name = fmt.Sprintf("#%d", i+1)
			bad(name, "empty name")
		case strings.Contains(name, "/"):
			bad(name, "name contains '/'")
		case seen[name]:
			bad(name, "duplicate step name")
		}
		seen[s.Name] = true
		if s.Event != "" {
			if s.Service != "" || s.Command != "" || s.Compensation != "" {
				bad(name, "a wait step (Event %q) has no service, command or compensation", s.Event)
			}
			if s.Retry != (Retry{}) {
				bad(name, "a wait step has no retry: its Timeout is the wait")
			}
			if s.Kind == Retriable {
				bad(name, "a wait step cannot be retriable")
			}
			if awaited[s.Event] {
				bad(name, "a second step waits for event %q", s.Event)
			}
			awaited[s.Event] = true
		} else {
			if s.Service == "" {
				bad(name, "no service")
			}
			if s.Command == "" {
				bad(name, "no command type")
			}
		}
		if s.Group != "" {
			if groups[s.Group] && d.Steps[i-1].Group != s.Group {
				bad(name, "the steps of group %q are not adjacent", s.Group)
			}
			groups[s.Group] = true
			if s.Kind != Compensable {
				bad(name, "a %v step in parallel group %q (groups hold compensable steps only)", s.Kind, s.Group)
			}
		}
		lo, hi := d.group(i)
		switch {
		case s.Kind < Compensable || s.Kind > Retriable:
			bad(name, "unknown kind %v", s.Kind)
		case s.Kind != Compensable && s.Compensation != "":
			bad(name, "a %v step has no compensation", s.Kind)
		case s.Kind == Compensable && s.Event == "" && s.Compensation == "" && hi-lo > 1:
			bad(name, "no compensation command (required on a step of a parallel group)")
		case s.Kind == Compensable && s.Event == "" && s.Compensation == "" && d.canFailAfter(i):
			bad(name, "no compensation command (required on a compensable step followed by one that can fail)")
		}
		if s.Kind == Pivot {
			if pivots++; pivots == 2 {
				bad(name, "a second pivot step")
			}
		}
		if i > 0 && s.Kind < d.Steps[i-1].Kind {
			bad(name, "a %v step after a %v step (compensable steps come first, then the pivot, then retriable ones)", s.Kind, d.Steps[i-1].Kind)
		}
		if s.Timeout <= 0 {
			bad(name, "timeout must be positive, got %v", s.Timeout)
		}
		if s.Retry.Attempts < 0 || s.Retry.Backoff < 0 {
			bad(name, "negative retry")
		}
	}
	return errors.Join(errs...)
}

// canFailAfter reports whether a step after step i can fail for good.
func (d *Definition) canFailAfter(i int) bool {
	for _, s := range d.Steps[i+1:] {
		if s.Kind != Retriable {
			return true
		}
	}
	return false
}

// group returns the bounds [lo, hi) of the parallel group of step i; a step
// without Group is a group of its own.
func (d *Definition) group(i int) (lo, hi int) {
	lo, hi = i, i+1
	g := d.Steps[i].Group
	if g == "" {
		return lo, hi
	}
	for lo > 0 && d.Steps[lo-1].Group == g {
		lo--
	}
	for hi < len(d.Steps) && d.Steps[hi].Group == g {
		hi++
	}
	return lo, hi
}

// events returns the event types the definition's wait steps wait for.
func (d *Definition) events() []string {
	var out []string
	for _, s := range d.Steps {
		if s.Event != "" {
			out = append(out, s.Event)
		}
	}
	return out
}

func (d *Definition) withDefaults() *Definition {
	c := *d
	c.Steps = append([]Step(nil), d.Steps...)
	c.Version = max(c.Version, 1)
	if c.CompensationRetry.Attempts == 0 {
		c.CompensationRetry.Attempts = 10
	}
	if c.CompensationRetry.Backoff == 0 {
		c.CompensationRetry.Backoff = time.Second
	}
	for i := range c.Steps {
		if c.Steps[i].Kind == Retriable && c.Steps[i].Retry.Backoff == 0 {
			c.Steps[i].Retry.Backoff = time.Second
		}
	}
	return &c
}

func (d *Definition) stepIndex(name string) int {
	for i, s := range d.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}
