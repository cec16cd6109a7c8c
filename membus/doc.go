// Package membus is the in-memory driver of eventbus: a broker that lives in
// the process, for unit tests, benchmarks and single-process programs.
//
// [New] creates a broker and a first connection to it; [Driver.Connect] opens
// another independent connection to the same broker, which plays another
// service instance. A *Driver implements driver.Driver and
// driver.RequestReplier and serves every pattern.
//
// # Queues and groups
//
// Destinations are keyed by their Name. Each subscription reads from a queue:
//
//   - A private subscription (Group "") has a queue of its own that receives
//     every message published to the destination; the queue is gone when the
//     subscription closes. SubscribeOptions.Durable is ignored for it.
//   - Subscriptions with the same Group compete over one FIFO queue per
//     (destination, group): each message goes to one member. Different groups
//     each receive every message.
//   - A group that any member opened with Durable outlives its members: with
//     no member connected it keeps queuing (bounded, see below), and a new
//     member resumes with what is queued. A durable group lives as long as
//     the broker. A non-durable group is gone with its last member, and so are
//     the messages it had queued.
//
// A message published to a destination that has no queue at all is dropped
// and Publish returns nil, as core NATS does. membus keeps no log beyond its
// queues, so StartFirst behaves as StartNew for a new group.
//
// # Delivery
//
// Delivery is at-least-once within a group. Each delivery carries Attempt,
// 1 on first delivery and one more on every redelivery. Ack and Term settle
// for good. Nack(0) puts the message back at the front of its queue, Nack(d)
// after d. A delivery that is not settled within AckWait (Options.AckWait or
// SubscribeOptions.AckWait) goes back to the front of its queue, and so do the
// unsettled deliveries of a subscription that closes while its group still
// exists. Messages returned to the front keep their relative order, so a group
// with one consumer that never nacks sees every key in publish order, even
// across a member restart.
//
// A redelivered message is the same *driver.Message value that was handed out
// before: one copy is made per queue at publish, none per delivery. A receiver
// that modifies a message and then nacks it sees its own changes again.
//
// Settling a delivery that is no longer in flight (settled already, or
// expired and handed back) fails with [ErrNotInFlight]; one from another
// subscription fails with [ErrForeignDelivery]. The valid deliveries of a
// batch are settled even when others are refused. An Ack that arrives after
// AckWait but before the broker handed the message back still counts.
//
// Receive takes nothing once its context is done, even when deliveries are
// waiting, so that a stopping consumer holds nothing it will not settle.
// SubscribeOptions.MaxInFlight, when positive, bounds the unsettled
// deliveries of a subscription: Receive waits for settlements. Zero means no
// bound beyond AckWait.
//
// # Memory and backpressure
//
// Each queue holds at most Options.BufferSize messages. When a queue is full,
// Publish blocks until a consumer makes room, the context ends (an error
// wrapping ctx.Err()) or the connection closes. Messages handed back by Nack,
// AckWait or a closing member are never refused, so a queue may exceed its
// bound by the number of messages in flight.
//
// # Request and reply
//
// Request returns driver.ErrNoResponders at once when no subscription is
// connected to the destination; otherwise it enqueues the request like
// Publish (one member of each group receives it) and waits for the first
// Reply. A reply that arrives after the requester gave up, or after another
// reply, is discarded and Reply returns nil. Reply on a delivery that carries
// no request fails with [ErrNotRequest].
//
// # Errors and concurrency
//
// Every method is safe for concurrent use. A message over
// Options.MaxMessageSize fails with a *driver.TooLargeError before anything is
// queued (a batch is checked whole first); a nil message fails with a
// *driver.MalformedError. After Close, methods of the connection and of its
// subscriptions return errors matching driver.ErrClosed, and blocked calls
// return promptly; other connections keep working. Close is idempotent and
// returns only when the goroutines it owns have ended: a queue runs one timer
// goroutine while it has members, for AckWait and Nack delays.
package membus
