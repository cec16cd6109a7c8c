// Package membus is the in-memory driver of eventbus: a broker that lives in
// the process, for unit tests, benchmarks and single-process programs.
//
// [New] creates a broker and a first connection to it; [Driver.Connect] opens
// another independent connection to the same broker, which plays another
// service instance. A *Driver implements driver.Driver,
// driver.RequestReplier, driver.GroupDeclarer and driver.DeadLetterStore and
// serves every pattern.
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
// and Publish returns nil, as core NATS does. [Driver.DeclareGroup] creates a
// durable group before its first member, so that it keeps what is published
// meanwhile; it declares only named durable groups (anything else fails with
// an error matching driver.ErrUnsupported), since a non-durable group without
// members is gone at once. membus keeps no log beyond its queues, so
// StartFirst behaves as StartNew for a new group.
//
// # Delivery
//
// Delivery is at-least-once within a group. Each delivery carries Attempt,
// 1 on first delivery and one more on every redelivery. Ack and Term settle
// for good, at once. Nack(0) puts the message back at the front of its queue,
// Nack(d) after d. Messages returned to the front keep their relative order,
// so a group with one consumer that never nacks sees every key in publish
// order, even across a member restart.
//
// membus does not de-duplicate: every Publish is stored again, whatever its
// id, and Publish never returns driver.ErrDuplicate.
//
// A message reaches its receivers as it was published, with the same
// driver.Message fields, Mode included: there is no wire, so no content mode
// is applied, and a message published as Structured is received as
// Structured.
//
// # Ack deadlines
//
// A process that holds a membus subscription is alive by definition: the
// broker lives in it. So a delivery handed out by Receive stays with its
// subscription, however long it is left unsettled, until the subscription
// settles it or closes; AckWait never takes it away from a live
// subscription. When a subscription closes, or the connection that opened it
// closes, its unsettled deliveries go back to the front of their queue at
// once, in their order, while the group still exists.
//
// AckWait (Options.AckWait, or SubscribeOptions.AckWait) matters only to
// [Driver.Crash], which simulates the death of a connection's process for
// tests: its subscriptions' unsettled deliveries go back to their queues
// AckWait after they were handed out, as a broker redelivers the messages
// of a consumer that stopped answering.
//
// A redelivered message is the same *driver.Message value that was handed out
// before: one copy is made per queue at publish, none per delivery. A receiver
// that modifies a message and then nacks it sees its own changes again.
//
// Settling a delivery that was settled already fails with [ErrNotInFlight];
// one from another subscription fails with [ErrForeignDelivery]. The valid
// deliveries of a batch are settled even when others are refused.
//
// Receive takes nothing once its context is done, even when deliveries are
// waiting, so that a stopping consumer holds nothing it will not settle.
// SubscribeOptions.MaxInFlight, when positive, bounds the unsettled
// deliveries of a subscription: Receive waits for settlements. Zero means no
// bound.
//
// # Memory and backpressure
//
// Each queue holds at most Options.BufferSize messages. When a queue is full,
// Publish blocks until a consumer makes room, the context ends (an error
// wrapping ctx.Err()) or the connection closes. Messages handed back by Nack,
// a closing member or a crash are never refused, so a queue may exceed its
// bound by the number of messages in flight.
//
// # Dead letters
//
// The broker keeps a copy of every message published to a dead-letter
// destination, apart from its queues, for driver.DeadLetterStore: its
// connections list, read, delete and purge them, whichever connection
// published them. Consuming from a dead-letter destination does not remove
// them. The copies are bounded for the whole broker by
// Options.DeadLetterLimit (10,000 messages) and Options.DeadLetterMaxBytes
// (64 MiB of driver.Message.Size); beyond them the oldest are dropped and
// counted by [Driver.DeadLettersDropped]. They live as long as the broker.
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
// Every method is safe for concurrent use. Publish, Request and Reply check a
// batch whole before anything is queued: a nil message fails with a
// *driver.MalformedError, one that driver.CheckEnvelope refuses with its
// *driver.InvalidError, and one over Options.MaxMessageSize with a
// *driver.TooLargeError. After Close, methods of the connection and of its
// subscriptions return errors matching driver.ErrClosed, and blocked calls
// return promptly; other connections keep working. Close is idempotent and
// returns only when the goroutines it owns have ended: a queue runs one timer
// goroutine while it has members, for Nack delays and crashed deliveries.
// Close waits for nothing but the broker's locks, so it returns promptly
// whatever its context says.
package membus
