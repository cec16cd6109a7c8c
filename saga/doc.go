// Package saga runs durable sagas over an eventbus.Bus: ordered steps, each a
// command to a participant service with a compensation command that undoes
// it, driven by an orchestrator that persists every transition.
//
// # Pieces
//
//   - A [Definition] names the saga and its [Step]s: service, command type,
//     compensation type, timeout, retry policy and an optional Input function
//     that builds the step's payload from the saga's data and earlier
//     replies. [Definition.Validate] reports every problem at once.
//   - An [Orchestrator] (one or several instances sharing a [Store]) starts
//     sagas, sends their commands with Bus.SendCommand, applies the replies
//     and fires deadlines. It is also the manager API: Start, Get, List,
//     Cancel, Retry.
//   - A [Participant] serves a service's step commands: handlers get a
//     [Request] (saga id, step, attempt, payload) and return a reply, a
//     transient error, or a definitive failure marked with [Fail].
//   - A [Store] persists instances and participants' deduplication records;
//     package saga/sqlstore implements it on PostgreSQL and SQLite.
//
// # State machine
//
// A saga is Running while its steps run in order, one at a time. A step that
// replies OK completes and the next starts; the last one completes the saga
// (Completed). A transient failure or an unanswered attempt (Step.Timeout) is
// retried after Step.Retry's backoff until its attempts are spent. A
// definitive failure, spent retries, the saga's own Definition.Timeout or
// Cancel switch the saga to Compensating: the compensations of the steps
// that took effect run in reverse order. A step whose attempt went
// unanswered may have taken effect, so it is compensated too. Compensations
// are retried (Definition.CompensationRetry) until they succeed — the saga is
// then Compensated — or the attempts are spent: the saga is then Failed,
// needs attention, and Retry resumes its compensation. Nothing is dropped
// silently.
//
// # Delivery and deduplication
//
// Commands and replies travel as bus commands, so they are durable and
// at-least-once: a reply sent while no orchestrator runs is handled when one
// starts. Command ids are deterministic (saga id, step, action, attempt; see
// [CommandID]), so brokers that deduplicate by id drop a resent copy.
// Participants deduplicate by the step's effect (saga id, step, action,
// whatever the attempt): a Participant records each outcome in its Store
// before replying and answers a duplicate with the recorded reply, without
// running the handler again; a duplicate arriving while the first copy runs
// is redelivered later. A compensation that overtakes its step (the step's
// command was slow) succeeds without calling the handler and bars the step
// from running afterwards. A handler runs at most once per effect unless the
// participant dies between the handler's return and the recording of its
// outcome; handlers whose effects must survive that use Request.Key as an
// idempotency key in their own database. Orchestrators ignore duplicate and
// late replies.
//
// # Persistence, recovery and several instances
//
// Every transition is persisted — with an optimistic version check — before
// the messages it sends (its outbox) are sent. Deadlines (step timeouts,
// retry backoffs, the saga timeout) are persisted, and Orchestrator.Run fires
// them whenever they pass, also after a restart. Each transition gives its
// orchestrator instance a lease on the saga (Options.Lease), which Run
// renews; when an instance dies, another one's Run takes the saga over once
// the lease has expired and sends the last transition's outbox again, with
// the same message ids. Any instance may apply any reply: the version check
// lets exactly one of two concurrent transitions of a saga win, and the
// loser reloads and re-evaluates. So several instances on one store never
// run a transition twice, and a saga whose instance died is finished by the
// others.
//
// # Lifecycle events
//
// With Options.DisableEvents unset, transitions publish events (types
// EventStarted, EventStepCompleted, EventStepFailed, EventStepCompensated,
// EventCompleted, EventCompensating, EventCompensated, EventFailed) with a
// [LifecycleEvent] payload, the saga id as Subject and CorrelationID, and a
// deterministic id. They are sent after the transition is persisted and
// again on takeover, so they are at-least-once, except that an instance
// dying between the two may lose an event whose saga then moves on by a
// deadline before the takeover.
//
// # Payloads
//
// Saga data, step payloads and replies are JSON. Steps' payloads are
// computed once and persisted, so every attempt and the compensation send
// the same bytes.
//
// # Errors and concurrency
//
// Errors match the package's sentinels with errors.Is: ErrUnknownSaga,
// ErrExists, ErrNotFound, ErrNotRunning, ErrNotFailed, ErrConflict,
// ErrInvalidDefinition (with *DefinitionError). Orchestrator and Participant
// are safe for concurrent use. NewOrchestrator and Participant.Handle
// register bus handlers, so they come before Bus.Start; Run runs until its
// context ends and owns every goroutine it starts.
package saga
