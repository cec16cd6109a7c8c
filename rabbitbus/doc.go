// Package rabbitbus is the eventbus driver for RabbitMQ (AMQP 0-9-1, on
// github.com/rabbitmq/amqp091-go). It serves every pattern: events,
// commands, queries (native request/reply through direct reply-to),
// streams and broadcasts, plus the bus's dead-letter destinations.
//
// # URLs
//
// Importing the package registers amqp:// and amqps:// with the driver
// package, so eventbus.Open and driver.OpenURL open it by URL:
//
//	amqp://user:password@host:5672/vhost?prefix=shop&queue_type=quorum
//	amqps://user:password@host:5671/vhost?tls_ca_file=/etc/ca.pem&tls_cert_file=c.pem&tls_key_file=k.pem
//
// [ParseURL] lists the query parameters; every field of [Config] but
// TLSConfig.Config, Dial and Logger has one, and an unknown parameter is an
// error. Passwords never appear in an error or in the log.
//
// # Configuration
//
// [Open] connects from a [Config]: the URL, TLS (CA file, client certificate
// and key, server name), heartbeat (10 s), connection name, and the
// [Options] of the topology: name prefix, queue type (classic or quorum),
// quorum delivery limit, queue expiries, prefetch, the number of shared
// publish channels and the message size limit. [Config.Validate] reports
// every problem at once. A connection that drops is re-dialled with backoff
// (100 ms doubling to 5 s); the exchanges are declared again, publishes
// wait for the new connection within their context, and each subscription
// declares its queue and consumes again on its next Receive. A connection
// the broker blocks (memory or disk alarm) makes publishes wait within
// their context, then fail with an error matching driver.ErrUnavailable;
// the block and unblock are logged.
//
// # Topology
//
// Exchanges, declared at Open (PREFIX is Options.Prefix, "eventbus"):
//
//	PREFIX.events      topic   events.<type>; other programs may bind events.order.*
//	PREFIX.commands    direct  commands.<service>.<type>
//	PREFIX.queries     direct  queries.<service>.<type>
//	PREFIX.streams     direct  streams.<name>
//	PREFIX.broadcast   direct  broadcast.<type>
//	PREFIX.deadletter  direct  deadletter.<origin>
//	PREFIX.wait        headers delayed redelivery (below)
//	PREFIX.requeue     direct  back from the wait queues, by queue name
//
// and, per queue whose subscription selects attributes, PREFIX.select.<queue>
// (headers; see Attribute selection).
//
// The routing key is the logical destination name. A consumer group is a
// queue PREFIX.<destination>.<group> bound to its pattern's exchange by
// the destination: one queue per event type and group (every group gets
// each event, its members compete), one per command type and service, one
// per stream and group. Durable groups (the bus's default) are durable
// queues of Options.QueueType; non-durable ones are transient classic
// queues that expire after Options.GroupExpiry without consumers. A
// subscription without group is an exclusive, auto-deleted, server-named
// queue: broadcasts use these. Query groups are auto-deleted queues that go
// with their last responder. [Driver.DeclareGroup] declares a group's queue
// and bindings without consuming. Declaring a queue that exists with other
// arguments (say quorum over classic) fails with a [*ConflictError] whose
// Reason is the broker's account of the difference.
//
// # Attribute selection
//
// The driver claims driver.Capabilities.AttributeSelect: a subscription to
// an event destination with SubscribeOptions.Select (the bus passes the
// Exact filters of a subscription's filter there) receives from the broker
// only the events whose attributes hold every selected value. Its queue is
// bound not to PREFIX.events by the routing key but to a headers exchange
// of its own, PREFIX.select.<queue> (auto-deleted with the queue), which
// PREFIX.events feeds by the routing key; the queue's bindings to it match
// the application properties cloudEvents:<name> (and, for other
// producers, cloudEvents_<name>) with x-match all. The bus still evaluates
// the whole filter on what arrives.
//
// What is selected: events only (a command that no queue accepts would
// come back unroutable to its sender, so commands are not narrowed), on
// every attribute and extension but datacontenttype (the content-type
// property) and time (other producers may send it as an AMQP timestamp).
// Structured-mode messages of this driver carry their attributes as
// application properties too, so they are selected like binary ones. A
// message of another producer is selected only by application properties
// whose values are the strings compared: a structured-mode message without
// properties, or an extension sent as a native AMQP number, does not reach
// a subscription whose selection names it. For such producers, write the
// condition in SQL (eventbus.SQL("tenant = 'acme'")), which is never pushed
// down.
//
// A group has one selection, its queue's. Each subscription declares the
// bindings of its own: a new selection replaces the bindings of the old
// one, and none restores the routing-key binding, so the queue's bindings
// follow the latest subscription of the group (including a member's
// re-subscription after a reconnection). Members of one group with
// different filters therefore all receive what the latest member selected;
// the bus still filters each member by its own filter, but events only the
// others' filters match may not arrive at all: give members of a group one
// filter. While the bindings change, the routing-key binding stays until
// the new selection is bound, so the queue never goes without a route (it
// may receive more for a moment, which the bus filters). Changes to one
// queue's bindings take turns across the group's members, in this process
// (a mutex) and in others (an exclusive queue PREFIX.select-lock.<queue>
// held while they change). [Driver.DeclareGroup] only adds the
// routing-key binding: it widens a group's queue until its next
// subscription.
//
// # Delivery semantics per pattern
//
// Publish returns once the broker confirmed every message (publisher
// confirms): stored in every queue it was routed to, on disk for persistent
// messages (delivery mode 2: events, commands, streams, dead letters). A
// broker nack fails the publish. Commands are published mandatory: a
// command that no queue is bound to comes back unroutable and fails with
// [ErrUnroutable]; an event nobody subscribes to is confirmed and dropped.
// Concurrent publishers share Options.PublishChannels channels in confirm
// mode (and as many for mandatory messages, opened at the first command):
// each publisher waits for the confirmations of its own messages only, so
// confirmations pipeline across publishers and a batch is pipelined, in
// order, on one channel. The frames of a batch (eventbus.Publisher hands
// over batches) leave in a few socket writes of up to 64 KiB instead of
// one write per message, which amqp091 would do by itself.
//
// Consumers use manual acks on a channel per subscription, with a prefetch
// (QoS) of SubscribeOptions.MaxInFlight (Options.Prefetch, 256, when
// zero): the broker never has more unsettled deliveries out than that.
// Ack and Term send basic.ack at once when no ack frame went in the last
// 2 ms, else coalesced 2 ms after the last one (or once a quarter of the
// prefetch waits): the acks waiting that are, with the deliveries settled
// before, every delivery of the channel up to the highest of them go as one
// basic.ack with multiple set, the others one frame each. A busy consumer
// sends an ack frame per 2 ms, not one per message; closing the
// subscription sends what waits first. Nack is described below. Closing a subscription closes its
// channel: the broker requeues at once everything it delivered on it and
// that was not acked, buffered or handed out. A
// process that dies has its deliveries requeued as soon as the broker
// notices the closed connection (at once on a TCP reset, two heartbeats at
// worst).
//
// RabbitMQ has no per-message ack deadline: SubscribeOptions.AckWait is
// ignored and a delivery stays with its consumer while the channel lives.
// The only deadline is the broker's consumer_timeout (30 minutes by default
// on 3.10), after which it closes the channel of a consumer that holds a
// delivery unacked: handlers must finish well within it, or the broker
// operator raises it. Within it, "nothing passes its deadline while the
// process lives" holds with no extension traffic.
//
// Queries use direct reply-to: the requester consumes amq.rabbitmq.reply-to
// on its request channel and publishes each request mandatory with that
// reply address and a correlation id. A request with no queue bound (no
// responder) comes back unroutable: driver.ErrNoResponders at once. A
// responder's reply goes through the default exchange to the reply
// address. Broadcasts reach every subscribed instance, not persisted.
//
// # Ordering
//
// A queue is FIFO: one consumer receives a group's messages in publish
// order (a Publish batch goes out on one channel, in order), so the driver
// claims OrderingByKey. Competing members of a group each see an ordered
// subset. Streams use single-active-consumer queues
// (x-single-active-consumer): one member of a stream's group consumes at a
// time and the others stand by, so the order holds per key across
// failover; the trade-off is that a stream group does not scale out across
// members. RabbitMQ stream queues (x-queue-type=stream) would keep history
// for StartFirst and replay, but they have no per-message ack or requeue,
// only offsets: they are not used. StartFirst therefore means, as StartNew,
// what is published from the queue's declaration on (declare groups ahead
// with DeclareGroup).
//
// # Dead letters and delayed retries
//
// The bus dead-letters by itself (it publishes to deadletter.<origin> and
// then terms). A dead-letter destination is a durable queue
// PREFIX.deadletter.<origin>, declared at its first publish, that keeps its
// messages for the dead-letter API ([Driver.ReadDeadLetters],
// [Driver.DeleteDeadLetters], [Driver.PurgeDeadLetters], which the CLI's
// dlq commands use) and that no subscription consumes: a group subscribed
// to a dead-letter destination has a queue of its own,
// PREFIX.deadletter.<origin>.<group>, bound like an event group's, and
// receives what is dead-lettered from then on. With quorum queues and
// Options.DeliveryLimit, the broker itself dead-letters a message delivered
// more often than the limit to the same exchange and routing key; keeper
// queues have no delivery limit. How the API reads a queue that AMQP 0-9-1
// cannot browse, and what that means for order, the redelivered flag and
// Refs, is told at [Driver.ReadDeadLetters].
//
// Nack(0) on a quorum queue requeues natively (basic.nack), and the
// broker counts the delivery in x-delivery-count, which the delivery limit
// applies to. Otherwise Nack republishes a copy to the message's own queue
// that carries the number of deliveries so far (header
// x-eventbus-attempt), waits for its confirmation, and acks the original:
// classic queues have only a redelivered flag, and the attempt count must
// be exact. A Nack with a delay republishes the copy through PREFIX.wait
// into a wait queue PREFIX.wait.<ms> whose TTL is the delay (rounded up to
// 100 ms below 10 s, to the second below 10 minutes, to the minute above),
// which dead-letters it after the TTL to PREFIX.requeue, and from there
// back to its queue. RabbitMQ 3.10 has no delayed-message exchange without a
// plugin; one queue per delay avoids the head-of-line blocking of
// per-message TTLs. Delivery.Attempt is the attempt header plus one, plus
// x-delivery-count (quorum) or one when redelivered (classic).
//
// # Content modes
//
// Messages follow the CloudEvents AMQP protocol binding. In binary content
// mode, the default, every attribute and extension but datacontenttype is
// an application property (AMQP 0-9-1 header) "cloudEvents:<name>" with a
// string value (cloudEvents:id, cloudEvents:source, cloudEvents:type,
// cloudEvents:time in RFC 3339...), datacontenttype is the content-type
// property, the key is cloudEvents:partitionkey, and the body is the data.
// Free headers are headers of their own, an array of strings when
// multi-valued. The message-id property is the event id. A message whose
// Mode is driver.Structured is sent in structured mode: the JSON event
// format as body, content-type application/cloudevents+json, with the
// attributes also as application properties (for headers bindings; on
// receipt the body wins).
//
// On receipt both modes are read, whatever the sender: structured when
// content-type is application/cloudevents (any suffix), binary when a
// cloudEvents:specversion property is present, or cloudEvents_specversion
// (the JMS-safe prefix that later revisions of the binding prefer, and
// some SDKs send); property values may be strings or native AMQP types
// (timestamps, integers, booleans). Anything else is delivered with
// Delivery.Err set to a *driver.MalformedError and the raw body, never
// dropped. The headers x-eventbus-*, x-death, x-delivery-count and
// x-first/last-death-* are the broker's and the driver's and are not
// passed on as Message headers.
//
// # Escape hatches
//
// [Driver.Conn] is the current *amqp091.Connection, for topology of your
// own; [Driver.ExchangeName] and [Driver.QueueName] give the names the
// driver uses, for binding other exchanges or inspecting queues.
// Config.Dial opens the TCP connection (proxies, tests).
package rabbitbus
