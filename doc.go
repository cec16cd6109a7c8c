// Package eventbus gives a service one API for every messaging pattern over
// one or several brokers at once.
//
// # Patterns
//
//	pattern          send                       receive                          destination
//	pub/sub          PublishEvent               SubscribeEvents(types, group)    events.<type>
//	point-to-point   SendCommand(service)       HandleCommand(service, type)     commands.<service>.<type>
//	request/reply    Query(service) → reply     HandleQuery(service, type)       queries.<service>.<type>
//	streaming        PublishStream(stream)      ProcessStream(stream, group)     streams.<stream>
//	broadcast        Broadcast                  SubscribeBroadcast(types)        broadcast.<type>
//
// Every message is a CloudEvents 1.0 envelope ([Message]); typed payloads go
// through a [Codec] (JSON by default) with the generic helpers [Typed],
// [TypedQuery], [TypedBatch] and [Ask].
//
// # Backends and routing
//
// Backends are drivers (package driver and its implementations membus,
// natsbus, ...) registered by name. A [Route] sends a pattern, optionally
// narrowed by a glob over destination names, to a backend; where no route
// decides, a selection matrix places events on NATS or SNS, commands on
// RabbitMQ or SQS, queries on NATS or RabbitMQ and streams on Kafka or
// JetStream when such backends are registered, then Options.DefaultBackend,
// then the first backend able to serve the pattern. Start validates every
// route and every handler's destination against the backends' declared
// capabilities and reports all problems at once in a *ConfigError.
//
// # Delivery contract
//
//   - Publishing returns nil only after the backend confirmed the message.
//     A message larger than the backend's MaxMessageSize fails with an error
//     matching ErrTooLarge, and one whose attributes, extensions or headers
//     cannot travel unchanged on every backend with ErrInvalid, before
//     anything is sent. A backend that de-duplicates does so by (source, id,
//     destination) and reports a dropped duplicate with ErrDuplicate; one
//     whose de-duplication costs every message (JetStream) applies it to
//     the destinations a route makes ExactlyOnce (Route.Delivery) and to
//     dead letters only: elsewhere a message published twice is stored
//     twice (at least once).
//   - Delivery is at-least-once. A handler returning nil acks; an error has the
//     message redelivered with exponential backoff and jitter (Options.Retry,
//     or WithRetry per subscription) until MaxAttempts, then dead-lettered to
//     deadletter.<destination> with its reason, attempt count and origin;
//     Permanent(err) dead-letters at once; MaxAttempts RetryForever never
//     gives up. Malformed messages and undecodable payloads are
//     dead-lettered, not retried. A panicking handler is an error
//     (*PanicError), never a crash. What a backend cannot carry in a dead
//     letter (an oversize body, a header it cannot encode) is cut or set
//     aside and the reason says so; a message that cannot be dead-lettered
//     even then is terminated with an error log and counted in
//     Stats.Dropped, never redelivered forever. On a backend that never
//     redelivers (core NATS without JetStream) the bus retries in place with
//     the same policy; one that can neither redeliver nor dead-letter drops a
//     message whose attempts are spent, with an error log — route work that
//     must not be lost to a Durable backend.
//   - Settlement keeps up with slow handlers: each message is acked (or
//     nacked, or terminated) on the backend as soon as its handler returned,
//     whatever the other messages of its batch do, and while the process
//     lives the driver keeps the ack deadline of every message it holds from
//     passing (see each driver's documentation for how), so a handler slower
//     than the ack wait is not redelivered while it runs.
//   - Stream batches are acked only after the batch handler succeeds.
//   - Query returns the reply or a typed error: ErrTimeout, ErrNoResponders,
//     or *RemoteError with the handler's error.
//
// # Dead letters
//
// A dead letter keeps the message's id, source, attributes, extensions,
// headers and data, plus its reason, attempt count, origin destination,
// consumer group and time (the deadletter* extensions). [Bus.DeadLetters]
// browses them on every backend whose driver implements
// driver.DeadLetterStore (membus, natsbus, ...), before or after Start:
// List selects them with a [DeadLetterFilter] (backend, origin, type,
// source, ids, reason, group, time range, limit), Get returns those of one
// message id, Replay publishes one, a selection or all of them again — to
// their origin or to another destination, through the backend's confirmed
// publish, without the dead-letter extensions — and removes each dead
// letter only once its replay is confirmed, reporting on each; Purge
// removes them. A replay reaches every group subscribed to its destination,
// with the message's own id, so consumers that de-duplicate by (source, id)
// drop it. It carries the extension "replayed" (the time of the replay),
// which brokers' own de-duplication counts, so a replay to the destination
// the message was first stored on is not dropped as a repeat.
//
// # Subscriptions
//
// Every subscribe and handle method works before and after Start and returns
// a *Subscription. Registered before Start, a subscription is validated and
// opened by Start with all the others; registered after, it is validated at
// once (with the same errors) and the call returns when it is established on
// the broker. Subscription.Close unsubscribes: it stops intake, starts no
// further handler, gives what it received and did not start back to the
// backend (another member of the group gets it at once), waits for the
// handlers in flight until its context ends, and leaves a durable group's
// position on the broker. DeclareEventGroup, DeclareCommands and
// DeclareStreamGroup create a durable group without consuming, so that
// messages published before its first member starts are kept.
//
// # Filters, content routes, pipelines, bridges and schemas
//
// WithFilter narrows a subscription with a [Filter]: Exact, Prefix and
// Suffix over a CloudEvents attribute or extension, All, Any and Not, and
// SQL (CloudEvents SQL over the attributes, and over JSON data through
// DATA('path')). Filters compile when the subscription is registered (a
// *FilterError then); a message filtered out is acked, counted in
// Stats.Filtered and never dead-lettered.
//
// Which part of a filter runs where: the broker selects by destination,
// and where it can also by attribute; the bus evaluates the whole filter on
// whatever arrives, on every backend. Every destination but a stream
// carries one message type (events.<type>, commands.<service>.<type>,
// broadcast.<type>), and every driver maps it onto a broker resource of its
// own: a NATS subject (the JetStream consumer's filter subject), a Kafka
// topic, a RabbitMQ routing key bound to the subscription's queue, an SNS
// topic or SQS queue, a Redis stream key, a membus queue. So the
// subscription's types are in effect a filter on type served by the broker:
// a message of another type never reaches the process. Exact("type", t) on
// a subscription to t alone is redundant: it adds a string comparison per
// message, no allocation and nothing on the wire (bench/RESULTS.md,
// "Filtering"); to select types, subscribe to them. On a stream, whose
// messages have many types, a filter on type runs in the bus like any
// other.
//
// Beyond the type, the bus hands the driver the Exact filters that the
// whole filter is a conjunction of (a lone Exact, the Exact members of a
// top-level All, and several WithFilter options, which are an All) on
// events and commands, as driver.SubscribeOptions.Select; never anything
// under Any, Not or SQL, nor an Exact on an empty value. A driver that
// claims driver.Capabilities.AttributeSelect applies it on the broker, so
// that a message it excludes never travels to the process. Per backend:
//
//   - NATS, Kafka, Redis Streams, membus: the destination only; every other
//     part of a filter runs in the bus after receiving.
//   - RabbitMQ: the destination, and on events the selected Exact
//     attributes, through a headers exchange binding of the group's queue
//     (rabbitbus documents it). Commands are not narrowed: a command that
//     no queue accepts comes back unroutable to its sender.
//   - SNS/SQS: the destination, and on events up to five selected Exact
//     attributes, through the filter policy of the SNS subscription of the
//     group's queue (awsbus documents it). An event that does not carry the
//     attribute as a message attribute of its own (structured mode, or
//     beyond SQS's ten attributes) passes SNS and is filtered in the bus.
//     Commands are not narrowed: they go to their queue directly.
//
// Prefix, Suffix, Any, Not, CESQL and DATA always run in the bus: a message
// they leave out has still travelled to the process.
//
// A [Route] with a Filter sends the messages it matches to its backend
// (high-value orders to a durable backend) and the others to the next route
// that applies; subscribers consume the destination from every backend its
// routes may choose, and Start validates each of those backends. A
// [Pipeline] maps a message to zero or more messages, per subscription
// (WithPipeline), per route on publish (Route.Pipeline) or per bridge; its
// errors follow the handler rules. [Bus.Bridge] forwards a destination from
// one backend to another and acks the source only after the target
// confirmed. With Options.Schemas, data is checked against its JSON Schema
// ([Schemas], named by dataschema or bound to the type) on publish — a
// *SchemaError before the wire — and on consume, where an invalid message
// is dead-lettered with its violations as the reason.
//
// # Lifecycle and concurrency
//
// New, then Register backends and register handlers, then Start. Close stops
// intake, closes every subscription as Subscription.Close does, flushes
// partial batches, closes the drivers and returns when every goroutine of
// the bus has ended — or, when its context ends first, cancels the handlers'
// contexts and returns within a short grace period after the deadline;
// afterwards every call fails with ErrClosed. All methods are safe for
// concurrent use. Handlers run one at a time per subscription unless
// WithConcurrency says otherwise; messages with the same Key never run
// concurrently, and a slow key holds up only its own messages.
//
// # Errors
//
// Every error a method returns starts with "eventbus: ", once, then the
// operation and its destination, then the cause: a driver's error with the
// driver's own prefix ("eventbus: publish events.order.created via nats:
// natsbus: ..."), or the bus's ("eventbus: publish event: message type
// "a..b": invalid name: empty token"). The typed errors (*FilterError,
// *SchemaError, *DecodeError, *PanicError) say no prefix themselves; the
// method that returns one adds it. Errors match the sentinels (ErrClosed,
// ErrInvalidName...) with errors.Is and the typed errors with errors.As,
// whatever wraps them.
package eventbus
