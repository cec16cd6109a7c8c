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
//     matching ErrTooLarge before anything is sent.
//   - Delivery is at-least-once. A handler returning nil acks; an error has the
//     message redelivered with exponential backoff and jitter (Options.Retry)
//     until MaxAttempts, then dead-lettered to deadletter.<destination> with
//     its reason, attempt count and origin; Permanent(err) dead-letters at
//     once. Malformed messages and undecodable payloads are dead-lettered, not
//     retried. A panicking handler is an error (*PanicError), never a crash.
//     On a backend that never redelivers (core NATS without JetStream) the bus
//     retries in place with the same policy; one that can neither redeliver
//     nor dead-letter drops a message whose attempts are spent, with an
//     error log — route work that must not be lost to a Durable backend.
//   - Stream batches are acked only after the batch handler succeeds.
//   - Query returns the reply or a typed error: ErrTimeout, ErrNoResponders,
//     or *RemoteError with the handler's error.
//
// # Lifecycle and concurrency
//
// New, then Register backends and register handlers, then Start. Close stops
// intake, drains in-flight handlers, flushes partial batches, closes the
// drivers and returns when every goroutine of the bus has ended; afterwards
// every call fails with ErrClosed. All methods are safe for concurrent use.
// Handlers run one at a time per subscription unless WithConcurrency says
// otherwise; messages with the same Key never run concurrently.
package eventbus
