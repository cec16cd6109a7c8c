// Package saga runs durable sagas over an eventbus.Bus: ordered steps, each a
// command to a participant service with a compensation command that undoes
// it, driven by an orchestrator that persists every transition.
//
// # Pieces
//
//   - A [Definition] names the saga, its version and its [Step]s: service,
//     command type, compensation type, timeout, retry policy and an optional
//     Input function that builds the step's payload from the saga's data and
//     earlier replies — or, for a step that waits for an event, the event's
//     type. Adjacent steps with the same Step.Group run in parallel.
//     [Definition.Validate] reports every problem at once.
//   - An [Orchestrator] (one or several instances sharing a [Store]) starts
//     sagas, sends their commands with Bus.SendCommand, applies the replies
//     and fires deadlines. It is also the manager API: Start, Get, List,
//     Cancel, Retry, Unrunnable.
//   - [RequestCancel] and [RequestRetry] record a cancel or retry request
//     in the Store, for programs that do not have the saga's definition
//     (the eventbus CLI); a running orchestrator applies it.
//   - A [Participant] serves a service's step commands: handlers get a
//     [Request] (saga id, step, attempt, payload) and return a reply, a
//     transient error, or a definitive failure marked with [Fail].
//   - A [Store] persists instances and participants' deduplication records;
//     package saga/sqlstore implements it on PostgreSQL and SQLite.
//
// # State machine
//
// A saga is Running while its steps run in order, one group at a time: a
// group is one step, or adjacent steps with the same Step.Group (a parallel
// group), which start together. When every step of the group replied OK the
// next group starts; the last one completes the saga (Completed). Each step
// has its own attempts, timeout and backoff, persisted in its StepStatus;
// Instance.Deadline is the earliest of them. A transient failure or an unanswered attempt (Step.Timeout) is
// retried after Step.Retry's backoff until its attempts are spent. A
// definitive failure, spent retries, the saga's own Definition.Timeout or
// Cancel switch the saga to Compensating: the compensations of the steps
// that took effect run in reverse order. A step whose attempt went
// unanswered may have taken effect, so it is compensated too. Compensations
// are retried (Definition.CompensationRetry) until they succeed — the saga is
// then Compensated — or the attempts are spent: the saga is then Failed,
// needs attention, and Retry resumes its compensation. In a parallel group,
// a compensation that gave up waits for its siblings' compensations to end
// before the saga is Failed, and Retry resumes every one that gave up.
// Nothing is dropped silently.
//
// # Waiting for an event
//
// A step with Step.Event set sends no command: it waits for an event of
// that type whose CorrelationID is the saga's id (a webhook, a human
// approval, another service's outcome), and the event's data becomes its
// reply. Register subscribes the orchestrator to the types its wait steps
// wait for, in the durable event group named Options.Service, so the
// orchestrator instances of a store share them and an event published
// while none runs is kept where the backend is durable. The wait is bounded
// by Step.Timeout, persisted as the step's deadline like any other: it
// fires in whatever orchestrator instance runs when it passes, after a
// restart too, and fails the step, so the saga compensates. An event that
// arrives while the saga is still before its wait step is kept in the
// instance (Instance.Received) and completes the step as soon as it begins;
// an event for a step that finished, for a saga that is not running, or
// with a CorrelationID that names no saga is acknowledged and dropped. An
// event is applied at most once per saga: the first wins. Wait steps may
// be parallel with commands or other waits; they have nothing to
// compensate. Event data that is not JSON is kept as a JSON string
// (base64).
//
// # Compensable, pivot and retriable steps
//
// Steps follow the classic saga taxonomy ([StepKind]): compensable steps
// first (the default; a later failure undoes them), then at most one Pivot
// step, the go/no-go point with no compensation, then Retriable steps,
// which have no compensation either. A pivot that fails, or is cancelled or
// timed out, undoes the compensable steps before it like any step. Once
// every step up to the first retriable one succeeded, the saga is past its
// point of no return: each retriable step is attempted until it succeeds,
// whatever Retry.Attempts says and even when its handler returns Fail
// (participants record only its success), with backoff doubling up to a
// minute; Cancel fails with ErrPastPivot and Definition.Timeout no longer
// applies. Validate checks the order and that every compensable step that
// a later failure could require undoing has a compensation.
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
// idempotency key in their own database (Request.Resumed tells them that an
// earlier run was interrupted). Orchestrators ignore duplicate and late
// replies.
//
// # Participant crashes
//
// A participant claims a command's record before running the handler. The
// claim is short (ParticipantOptions.Claim, default 5s) and renewed while
// the handler runs, so it lasts exactly as long as a live process works on
// the command. When the process dies, its claims expire within Claim, and
// whatever comes next takes them over: the command's redelivery or the
// step's next attempt runs the handler again (Request.Resumed), and a
// compensation bars the step and runs with Request.Uncertain set — the step
// may or may not have taken effect, and the compensation undoes whatever of
// it did. A duplicate that finds a live claim is redelivered by the bus
// (with backoff, never dead-lettered) until the claim's outcome is
// recorded or the claim expires. So a participant crash costs at most Claim
// plus an attempt's timeout; keep Claim well below Step.Timeout ×
// Retry.Attempts, and the same for the compensation's retry policy. A
// handler that loses its claim while running (its renewals failed for
// longer than Claim, and another process took the command over) has its
// context cancelled, and its outcome is dropped in favour of the other
// run's. The crash test (crash_test.go) kills orchestrator and participant
// processes, alone and together, on both stores, half of the sagas with a
// parallel group, and checks that every saga ends completed or compensated
// with each effect made exactly once.
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
// others. Run renews its leases on a schedule of its own, so that a long
// poll on a slow database does not let them lapse.
//
// # Manager requests
//
// Cancel and Retry need the saga's definition (its steps' services and
// commands), which only the programs that run the saga have. Any other
// program — the eventbus CLI, an operator's tool — records a request in the
// store instead, with RequestCancel or RequestRetry, and an orchestrator
// that has the definition applies it:
//
//   - Recording checks what the stored state tells (ErrNotFound,
//     ErrNotRunning for a cancel, ErrNotFailed for a retry,
//     ErrRequestPending when a request of the other kind waits; a pending
//     request of the same kind is returned instead of a second one), stores
//     the request in the instance (Instance.Request, with who and when) and
//     an entry "cancel.requested" or "retry.requested" in its history, with
//     the version check: a transition persisted meanwhile makes it reload
//     and check again, and a transition that loses to it reloads and keeps
//     the request. It takes no lease: Store.RecordRequest keeps the owner's.
//   - The request makes the saga due at once, whatever its state and
//     whatever the requester's clock says (Instance.WakeAt), so the next
//     poll of any orchestrator instance that registered the definition's
//     version applies it — the saga's owner or
//     another one, which then holds the saga's lease, as after any
//     transition (and, if the owner's lease had expired, first sends its
//     last messages again, as a takeover does). The rules are those of
//     Cancel and Retry on the state the saga has then: a cancel is refused
//     when the saga is past its pivot or no longer running (it ended, or
//     compensates, since the request was recorded), a retry when the saga
//     is no longer Failed.
//   - An orchestrator passes over due sagas whose definition (name or
//     version) it lacks — another service's sharing the store, or a retired
//     version's — until Register gives it one: however many there are, they
//     do not hold up its own sagas' requests, deadlines and takeovers.
//   - Applying or refusing clears the request and records the outcome in
//     the same versioned transition: "cancel.applied" (followed by the
//     compensation's entries) or "cancel.refused" with the reason, the same
//     for "retry", with the orchestrator instance as Event.By. Of several
//     instances, exactly one persists it; the others reload and find no
//     request. So a request is applied at most once, and is not lost while
//     an orchestrator that has the definition runs now or later.
//   - Instance.RequestOutcome reads the outcome from the history, and
//     WaitRequest polls the store for it; a refusal is a *RefusedError that
//     matches ErrNotRunning, ErrPastPivot or ErrNotFailed like Cancel's and
//     Retry's errors. Orchestrators that have not registered the saga's
//     definition leave the request alone (see Definition versions), and
//     orchestrators built with versions of this package that predate
//     requests neither apply nor keep it: upgrade every orchestrator of a
//     store before recording requests in it.
//
// # Definition versions
//
// An instance records the Definition.Version it started on and runs to its
// end on it: steps, inputs, timeouts and retry policies are those of that
// version, even when a newer one is registered meanwhile. Start uses the
// highest version registered under the name. To change a definition, add it
// with the next version and keep the old one registered until no instance
// runs on it. An orchestrator that meets an instance whose version (or
// name) it has not registered changes nothing: operations on it fail with
// ErrUnknownVersion (or ErrUnknownSaga), its replies are redelivered until
// an orchestrator that knows the version handles them, Run logs it once,
// and Unrunnable lists it.
//
// # Choreography
//
// The package has no choreography helpers, on purpose. In a choreographed
// saga each service reacts to the others' events and no process holds the
// saga's state: nothing knows which steps took effect, when the saga is
// over, which compensations are due or that one keeps failing. What this
// package promises — every transition persisted, deadlines that fire after
// a crash, compensation in reverse, Failed sagas listed for a person, Retry
// — rests on that state; helpers would have to rebuild an orchestrator in
// every service, or promise less under the same name. What choreography
// needs from a library the root package already has: durable event groups
// (Bus.SubscribeEvents), deterministic ids for deduplication, and
// CorrelationID to carry the saga's id. The two styles meet through wait
// steps: an orchestrated saga can wait for an event another service
// publishes as part of its own choreography, and its lifecycle events let
// choreographed services react to the saga's outcome.
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
// # Tracing
//
// With Options.TracerProvider, Start opens a span "saga <name>" (a child of
// the span in Start's context, if any) and persists its W3C trace context
// with the instance (Instance.TraceParent, in the store's JSON body, so
// stores need no schema change). Every command a transition sends gets a
// span under it, "step <step>" or "compensate <step>", linked to what caused
// the transition (a reply's handling, a Cancel call), and carries the trace
// context in its traceparent attribute; so do lifecycle events and
// participants' replies. A deadline fired by Run, or a takeover by another
// orchestrator instance after a crash, continues the same trace from the
// store. With a telemetry Observer on the buses, a participant's handling
// is a child of the command's send, and the orchestrator's handling of the
// reply a child of the participant's: the saga is one trace across the
// services. Without a TracerProvider, the trace continued is that of
// Start's context, if it has a span.
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
// ErrUnknownVersion, ErrExists, ErrNotFound, ErrNotRunning, ErrPastPivot,
// ErrNotFailed, ErrConflict, ErrRequestPending, ErrUnknownRequest,
// ErrInvalidDefinition (with *DefinitionError); a refused request is a
// *RefusedError. Orchestrator
// and Participant are safe for concurrent use. NewOrchestrator,
// Participant.Handle and Orchestrator.Register (for the events of wait
// steps) register bus handlers, before or after Bus.Start; Run
// runs until its context ends and owns every goroutine it starts.
package saga
