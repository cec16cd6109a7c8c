// Package driver is the contract between the eventbus Bus and a broker.
//
// A driver translates; it does not decide. It moves envelopes ([Message]) to and
// from one broker, declares what that broker can honestly do ([Capabilities]),
// and classifies broker errors into the sentinels of this package. Policy —
// retries and backoff, dead-lettering, decoding, tracing, batching of handler
// work, request/reply over plain messaging — lives once in the eventbus package,
// above this contract.
//
// # Contract
//
//   - Publish returns nil only after the broker confirmed every message of the
//     batch (a persistent broker: stored; a non-persistent one: written to the
//     connection and flushed). On error, none of the batch may be assumed
//     delivered, though some may have been (at-least-once).
//   - A message whose [Message.Size] exceeds Capabilities.MaxMessageSize is
//     refused with a [*TooLargeError] before anything is written to the wire,
//     and so is one that [CheckEnvelope] refuses, with its [*InvalidError]:
//     every driver accepts and refuses the same envelopes.
//   - A broker that de-duplicates does so by (source, id, destination) and
//     [Message.DedupParts] (a dead letter's group and time, a replay's
//     time), never by id alone: the same id from two sources or to two
//     destinations is two messages, the dead letters of one message given up
//     by two groups are two, and a replay of a dead letter is not a repeat
//     of the original publish. When the broker drops a publish as a duplicate, Publish
//     returns an error matching [ErrDuplicate] (after storing the rest of the
//     batch). A broker whose de-duplication costs every message it applies
//     to may apply it only where asked: through [DeduplicatedPublisher].
//   - Receive blocks until at least one delivery is available, the context is
//     done, or the subscription is closed ([ErrClosed]). It never returns an
//     empty batch with a nil error.
//   - Every delivery is eventually settled by the caller with Ack, Nack or
//     Term. A delivery that is neither acked nor termed is redelivered
//     (Attempt+1) on persistent drivers; Term means "never redeliver".
//   - A settlement is sent to the broker when Ack, Nack or Term is called (or
//     within a few milliseconds, if the driver coalesces), never held back
//     for other deliveries.
//   - While its subscription is open, a delivery the driver received from the
//     broker and that is not settled yet — waiting in the driver's buffer,
//     handed out by Receive, running in a handler — never passes the broker's
//     ack deadline: the driver extends it (JetStream in-progress acks, SQS
//     visibility, ...) or prefetches only what can be handed out before it.
//     SubscribeOptions.AckWait is how long a dead process holds a message.
//   - Subscription.Close gives every message the driver received but Receive
//     did not hand out back to the broker at once, so another member of the
//     group receives it without waiting for an ack deadline. Deliveries
//     handed out and not settled are given back too (the caller settles what
//     it handled before it closes).
//   - All methods are safe for concurrent use. After Close, every method returns
//     an error that matches [ErrClosed] with errors.Is, and Close returns only
//     when the driver's goroutines have ended. Every Close honours its
//     context: with the broker gone for good it returns by ctx's deadline.
//
// Optional powers are separate interfaces checked with a type assertion:
// [RequestReplier] for native request/reply, [GroupDeclarer] to create a
// durable group without consuming, [UnconfirmedPublisher] and
// [DeduplicatedPublisher] for the at-most-once and exactly-once publishes.
package driver

import (
	"context"
	"time"
)

// Driver is a connection to one broker.
type Driver interface {
	// Capabilities reports what this driver can do. It must not change after
	// the driver is opened.
	Capabilities() Capabilities

	// Publish sends msgs to dest and returns once the broker confirmed all of
	// them. The driver must not retain msgs or their Data after returning.
	Publish(ctx context.Context, dest Destination, msgs []*Message) error

	// Subscribe opens a subscription on dest. It returns once the subscription
	// is established on the broker, so that a message published after Subscribe
	// returns is delivered to it (unless opts.StartAt says otherwise).
	Subscribe(ctx context.Context, dest Destination, opts SubscribeOptions) (Subscription, error)

	// Close closes every subscription opened through this driver and releases
	// the connection. Messages received but not yet acked are redelivered by
	// persistent brokers.
	Close(ctx context.Context) error
}

// Subscription is a stream of deliveries from one destination.
type Subscription interface {
	// Receive returns between 1 and max deliveries. It blocks until at least one
	// is available, ctx is done (ctx.Err()) or the subscription is closed
	// (ErrClosed). The returned slice belongs to the caller.
	Receive(ctx context.Context, max int) ([]*Delivery, error)

	// Ack confirms that the deliveries were processed; they are not delivered
	// again to this group. Ack, Nack and Term must not retain ds.
	Ack(ctx context.Context, ds []*Delivery) error

	// Nack asks for redelivery after delay (0: as soon as possible). A driver
	// without native delay may redeliver earlier than delay.
	Nack(ctx context.Context, ds []*Delivery, delay time.Duration) error

	// Term settles the deliveries without processing them: they are never
	// delivered again. The bus calls it after it dead-lettered a message.
	Term(ctx context.Context, ds []*Delivery) error

	// Close stops the subscription. Unsettled deliveries are redelivered later
	// by persistent brokers. A durable group's position is kept.
	Close(ctx context.Context) error
}

// Delivery is one received message and the driver's handle to settle it.
type Delivery struct {
	// Message is the received envelope. The receiver owns it.
	Message *Message
	// Attempt counts deliveries of this message to this group, starting at 1.
	Attempt int
	// Err is set when the driver received something it could not read as an
	// envelope (it matches ErrMalformed). Message then holds whatever could be
	// read, with Data set to the raw body, so that the bus can dead-letter it:
	// a malformed message is never dropped silently, nor redelivered forever.
	Err error
	// Handle is private to the driver that produced the delivery (an ack id,
	// a broker message, a sequence...). Callers never read it.
	Handle any
}

// RequestReplier is implemented by drivers whose broker has request/reply of
// its own (NATS inboxes, membus). The bus uses it for queries instead of its
// generic reply-destination fallback.
type RequestReplier interface {
	// Request sends req to dest and waits for one reply. It returns
	// ErrNoResponders when the broker knows that nobody subscribes to dest, and
	// ctx.Err() when the context ends first.
	Request(ctx context.Context, dest Destination, req *Message) (*Message, error)

	// Reply answers the request carried by d. The subscription that produced d
	// must have been opened by this driver on a Query destination.
	Reply(ctx context.Context, d *Delivery, reply *Message) error
}

// GroupDeclarer is implemented by durable drivers that can create a consumer
// group (and whatever the broker needs behind it) without consuming from it,
// so that messages published before the group's first member starts are kept
// for it. Declaring a group that exists already changes nothing.
type GroupDeclarer interface {
	DeclareGroup(ctx context.Context, dest Destination, opts SubscribeOptions) error
}

// StartPosition says where a new subscription or group starts reading.
type StartPosition int

const (
	// StartNew delivers only messages published after the subscription is
	// established. A durable group that already exists resumes where it was.
	StartNew StartPosition = iota
	// StartFirst delivers every message the broker still retains for dest.
	StartFirst
)

// SubscribeOptions configures a subscription.
type SubscribeOptions struct {
	// Group names a consumer group. Subscriptions in the same group compete:
	// each message goes to one of them. Different groups each receive every
	// message. An empty Group makes a private subscription that receives every
	// message and is gone when closed.
	Group string

	// Durable keeps the group's position (and its unacked messages) on the
	// broker while no member is connected. Requires Capabilities.Durable.
	Durable bool

	// StartAt applies when the group does not exist yet.
	StartAt StartPosition

	// MaxInFlight bounds the deliveries handed out and not yet settled on this
	// subscription. Zero means the driver's default.
	MaxInFlight int

	// AckWait is how long the broker waits for a settlement before it
	// redelivers. Zero means the driver's default.
	AckWait time.Duration

	// MaxDeliveries, when positive, asks a driver with native dead-lettering to
	// stop redelivering after this many attempts. The bus dead-letters by itself
	// at its own attempt limit, so drivers may ignore it.
	MaxDeliveries int

	// Select narrows what the broker delivers: only messages for which every
	// AttributeMatch holds. It is an optimisation that a driver may apply
	// fully, partly (some of the matches, or some destinations) or not at all:
	// the bus evaluates the subscription's whole filter on whatever arrives,
	// so correctness never depends on it, and a driver must never deliver
	// less than Select allows — with two exceptions: a broker that keeps the
	// selection per group (RabbitMQ: the group queue's bindings; SNS: the
	// filter policy of the group queue's subscription) applies the latest
	// member's, so members of one group must subscribe with one filter
	// (while a rolling deploy changes it, members still running the old
	// filter may miss what only it selects); and SNS lets no message without
	// any message attribute through a filter policy on attributes, so with awsbus
	// another producer's event sent with no message attribute at all (the
	// CloudEvent whole in the body) does not reach a subscription with a
	// Select. A driver that applies it claims Capabilities.AttributeSelect
	// and documents which matches it applies.
	Select []AttributeMatch
}

// AttributeMatch holds when the message's CloudEvents attribute or
// extension Name (the lower-case CloudEvents name, as drivers carry it on
// the wire; partitionkey for Message.Key) equals Value exactly. A message
// without the attribute does not match.
type AttributeMatch struct {
	Name, Value string
}
