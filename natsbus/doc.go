// Package natsbus is the eventbus driver for NATS: events, commands, streams
// and dead letters are stored in JetStream; queries, broadcasts and replies
// travel over core NATS. It also runs a NATS server inside the process, the
// zero-configuration default of eventbus.
//
// # URLs and configuration
//
// [Open] connects from a [Config]: server URLs (nats://, tls://, ws://,
// wss://; nats://127.0.0.1:4222 when empty), user and password, token, NKey
// seed or credentials file, TLS (CA file, client certificate), reconnect
// attempts and wait, and the [Options] of the driver: JetStream on or off,
// stream names and limits, ack wait, message size. [Config.Validate] reports
// every problem at once. Passwords and tokens never appear in an error, even
// when they are part of a URL.
//
// [StartServer] runs a nats-server with JetStream file storage in
// EmbeddedOptions.DataDir, either without any listener (in-process
// connections only) or on a port that other processes join.
// [OpenEmbedded] starts one and opens a driver on it, connected in memory;
// closing that driver shuts the server down.
//
// # Mapping
//
// A logical destination name is its NATS subject ("events.order.created");
// every token is checked to be a literal (no wildcard, no whitespace), so a
// name never widens into a wildcard nor leaves its pattern. JetStream keeps
// one stream per stored pattern, named from Options.StreamPrefix:
// PREFIX_EVENTS (events.>), PREFIX_COMMANDS (commands.>), PREFIX_STREAMS
// (streams.>) and PREFIX_DEADLETTER (deadletter.>). Open creates missing
// streams and updates their limits; a stream whose subjects, retention or
// storage differ fails Open with a [*StreamConflictError] naming each field.
// A consumer group is a pull consumer named after the group and destination
// (dots and other forbidden characters replaced, a hash of the exact pair
// appended), filtered on the destination's subject, with explicit acks and
// no delivery limit: the bus dead-letters at its own attempt limit and then
// terms, so the server never stops delivering silently.
//
// # Content modes
//
// Messages are CloudEvents as the CloudEvents NATS protocol binding maps
// them. In binary content mode, the default, each attribute and extension is
// a "ce-" header (ce-specversion, ce-id, ce-type...) with a percent-encoded
// value, the key is the ce-partitionkey extension, free headers keep their
// multiple values, and the body is the data. A message whose Mode is
// [driver.Structured] is sent in structured content mode instead: the JSON
// event format as the body (Content-Type application/cloudevents+json),
// every attribute and extension a top-level member (the key as
// "partitionkey"), data inline when datacontenttype is JSON (or absent) and
// the data is valid JSON, else base64 in data_base64; free headers stay NATS
// headers. An extension never replaces an attribute in either mode.
//
// On receipt the driver reads both modes whatever the sender: structured
// when Content-Type is application/cloudevents (any suffix), or when there is
// no ce-specversion header and the body is a JSON event (the CloudEvents Go
// SDK's NATS bindings send it with no header at all); binary otherwise, with
// datacontenttype from a Content-Type header when ce-datacontenttype is
// absent. A received message's Mode is the mode it arrived in. The SDK's
// nats_jetstream binding (v2.16.2) does not percent-decode the binary-mode
// header values it reads, as the binding requires: a value with spaces or
// non-ASCII characters reaches it percent-encoded; send such events in
// structured mode to it.
//
// # De-duplication
//
// [Driver.PublishDeduplicated] gives stored messages a Nats-Msg-Id, a
// digest of (source, id, subject) — and, for a dead letter, of its group
// and time, for a replay of its time — : 32 hex digits of SHA-256. The
// server drops a message whose digest it stored within Streams.Duplicates
// (2 minutes by default; URL stream_duplicates), so the same id from two
// sources or to two destinations is two messages, and only a true repeat
// is dropped. PublishDeduplicated then returns an error matching
// [driver.ErrDuplicate], after the rest of the batch was stored; a message
// the driver publishes again itself, after a lost acknowledgement or
// connection, is stored once and not reported as a duplicate. The header
// never appears among a received message's headers.
//
// [Driver.Publish] sends no Nats-Msg-Id: the id costs the server a lookup
// and an entry in the stream's duplicate table per message (in
// bench/RESULTS.md, 3 to 5 µs of CPU and 4 allocations per message, and
// about 70 bytes of live heap per message for as long as the window
// holds it), which an at-least-once publish does not need. A message published twice through
// it — by the caller, or by the driver after a lost acknowledgement — is
// stored twice. The bus publishes through PublishDeduplicated the
// destinations a route makes exactly-once (eventbus.Route.Delivery) and
// dead letters (rare, and a dead letter stored twice would be listed
// twice); everything else, replays included, through Publish.
// PublishUnconfirmed never sends the header.
//
// # Received messages
//
// A received message that is not a
// valid event (no ce-specversion, missing id, source or type, a malformed
// time or encoding) is delivered with Delivery.Err set to a
// [*driver.MalformedError] and its raw body, never dropped.
//
// # Delivery semantics per pattern
//
//   - Event, Command, Stream, DeadLetter (JetStream): at least once. Publish
//     returns nil only when the server stored every message of the batch.
//     Publishes are asynchronous and pipelined within Options.PublishWindow.
//     A group receives each message once, its members compete; a durable
//     group keeps its position and unacked messages while no member runs; a
//     non-durable group disappears a minute after its last member; a private
//     subscription (no group) is an ephemeral consumer, deleted when closed.
//     Nack redelivers at once or after its delay (the server's NakWithDelay);
//     Term never redelivers; Attempt is the server's delivery count. One
//     consumer of a group sees each subject's messages in publish order.
//   - Intake (JetStream): each subscription pulls with its own loop and one
//     inbox, its open pull requests asking together for at most the room left
//     in its prefetch buffer (Options.Prefetch, or MaxInFlight when lower):
//     every message the server sends has a place in that buffer and is
//     tracked from the moment it arrives, never left waiting where the driver
//     cannot renew it. A request goes out when there is room for a quarter of
//     the buffer and none is open, or for half of it while one is still being
//     served, so that a consumer that keeps up never waits a round trip for
//     its next batch; the server serves the requests in turn, in order. A
//     request expires on the server after 10 s and asks for a heartbeat every
//     second; one that ends unfilled gives back what it did not bring; when
//     nothing arrives for 2 s (a request lost in a reconnect or a server
//     restart) the loop asks again, and a refused request is retried after a
//     short pause. After a refusal the loop counts none of its requests as
//     open, so a request still being served may bring messages beyond the
//     buffer: they are held and renewed like the others, never lost.
//   - Ack deadlines (JetStream): while a subscription is open, no message it
//     holds unsettled passes its ack wait — whether it waits in the prefetch
//     buffer or was handed out by Receive and is still being handled. A
//     goroutine per subscription ticks every third of the ack wait and sends
//     an in-progress ack for each message held longer than a tick, so a
//     deadline is renewed one to two thirds of the ack wait after the last
//     renewal; messages settled within a tick cost nothing. The ack wait
//     (SubscribeOptions.AckWait, else Options.AckWait; at least 1 s) is thus
//     how long a message stays with a process that died or lost its
//     connection: after it, the server redelivers to another member.
//   - Closing a JetStream subscription gives back at once (a nak, which
//     counts as an attempt) every message it holds: pulled and not handed
//     out, including those the server sent before it saw the subscription's
//     inbox go (close drains it), and handed out but not settled (settle what
//     was handled before closing). Another member of the group receives them
//     without waiting for the ack wait.
//   - Query: core NATS request/reply through an inbox; a group is a queue
//     group, so one responder answers. A request nobody subscribes to fails at
//     once with [driver.ErrNoResponders].
//   - Broadcast and Reply: core NATS, at most once, nothing stored: Publish
//     returns once the server has processed the messages (concurrent
//     publishers share the PING/PONG round trip that proves it); a subscriber
//     that is not connected misses them; Nack and Term cannot redeliver.
//
// # Capabilities
//
// With JetStream (the default) the driver claims Durable, ConsumerGroups,
// OrderingByKey, Redelivery, NativeDelay and NativeRequestReply, and serves
// every pattern. MaxMessageSize is the server's max_payload less 8 KiB for
// the header block (or Options.MaxMessageSize when lower).
//
// With Options.JetStream false it serves Event, Command, Query, Broadcast and
// Reply over core NATS, at most once: groups are queue groups and order holds
// per publisher, but nothing is durable, redelivered or delayed, and the
// Stream and DeadLetter patterns are refused with [driver.ErrUnsupported]
// (the bus refuses such routes at Start). A durable subscription is refused
// the same way.
//
// The driver needs message headers (NATS 2.2) and, with JetStream, NATS 2.9
// for the consumer API it uses; an older server, or a server without
// JetStream while JetStream is asked for, fails Open with an error matching
// [driver.ErrUnsupported] that says what is missing. Debian's nats-server
// 2.9.10 passes the whole conformance suite.
//
// # Outages
//
// The connection reconnects (forever by default). While it is down, a
// publish to JetStream waits for the reconnection within its context, then
// publishes again what was not acknowledged, under the same ids; it never
// reports a message the server did not acknowledge. Subscriptions resume by
// themselves after a reconnect. A consumer deleted on the server ends Receive
// with an error matching [driver.ErrUnavailable].
//
// # Escape hatches
//
// [New] wraps a *nats.Conn made by the caller, for options Config does not
// cover; closing the driver leaves that connection open.
// [Driver.DeclareGroup] ([driver.GroupDeclarer]) creates a durable group's
// consumer without consuming, so that it keeps what is published before its
// first member starts; on a core NATS destination it fails with
// [driver.ErrUnsupported]. The driver is a [driver.DeadLetterStore] over the
// DEADLETTER stream: it reads dead letters with direct message gets (no
// consumer is created or moved), deletes them by stream sequence and purges
// a destination by subject; the bus's dead-letter API and the CLI's dlq
// commands use it. [Driver.Conn],
// [Driver.JetStream] and [Driver.StreamName] expose the connection, the
// JetStream context and the stream names; [Server.NATSServer] the embedded
// nats-server.
//
// # Errors and concurrency
//
// Errors are wrapped once with the package name and match the driver
// sentinels with errors.Is: ErrClosed after Close, ErrUnavailable for a lost
// server, ErrTooLarge, ErrNoResponders, ErrUnsupported, ErrMalformed,
// ErrInvalid and ErrDuplicate. Every publishing path (Publish, Request,
// Reply) checks its messages with [driver.CheckEnvelope] before the wire and
// returns its [*driver.InvalidError]. All methods are safe for concurrent
// use. Close stops every subscription (giving back what they hold), waits
// for their goroutines, flushes outstanding acks and closes the connection.
// Every Close honours its context: with the server gone for good (reconnect
// attempts exhausted, credentials refused) it returns by the context's
// deadline, and at once when the connection is already closed.
//
// Giving back at close relies on the server forgetting a pull request whose
// requester went away. nats-server 2.9 (Debian's) keeps a closed
// subscription's last pull request waiting until it expires (10 s) and may
// deliver a message given back at close to it; that message then returns
// only after AckWait. Current servers, such as the embedded one, do not.
package natsbus
