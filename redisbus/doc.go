// Package redisbus is the eventbus driver for Redis: events, commands,
// queries, streams, replies and dead letters are Redis Streams read through
// consumer groups; broadcasts travel on Redis Pub/Sub. It needs Redis 6.2 or
// later (XAUTOCLAIM); it is tested against Debian's redis-server 7.0.
//
// # URLs
//
// Importing the package registers redis:// and rediss:// (TLS) with
// driver.OpenURL:
//
//	redis://[user:password@]host:port[/db][?param=value&...]
//
// The user information authenticates (an ACL user and password, or
// :password@ for requirepass), the path is the database index, and every
// field of [Config] has a query parameter ([ParseURL] lists them: addrs,
// master_name, TLS files, prefix, max_len, ack_wait...). An unknown
// parameter is an error. Passwords never appear in an error or a log.
//
// # Configuration
//
// [Open] connects from a [Config] through go-redis's universal client: one
// address is a standalone server, several are Cluster seeds, and with
// MasterName they are Sentinels. Username/Password (ACL), DB, TLS (CA file,
// client certificate and key, server name) and the pool size are the
// connection's settings; [Options] are the driver's: key prefix, stream
// trimming (MaxLen, approximate), ack wait, reclaim interval, block time,
// message size, pipeline workers and read-ahead. [Config.Validate] reports
// every problem at once. The tests start their own Sentinel (a master and a
// sentinel) and Cluster (three masters) deployments and run a round trip on
// each.
//
// # Mapping
//
// A destination's stream is the key PREFIX:{name}, events.order.created
// under the default prefix "eventbus" being eventbus:{events.order.created};
// the name is a hash tag, so a destination's keys share one Cluster slot.
// A broadcast destination is the Pub/Sub channel PREFIX:name. A consumer
// group is a Redis consumer group of the same name on the stream; each
// subscription is one consumer of it. A private subscription (no group) is
// a group of its own, created at the end of the stream and destroyed at
// Close.
//
// There is no official CloudEvents binding for Redis. Entries follow the
// binary content mode of the Kafka binding, as fields that read well in
// redis-cli XRANGE: ce_specversion, ce_id, ce_source, ce_type, ce_time and
// every other attribute and extension as "ce_" + its name; datacontenttype
// as content-type; the key as ce_partitionkey; a free header as
// "hdr:" + its name (several values joined by newlines); the data last, as
// the field data:
//
//	XADD eventbus:{events.order.created} MAXLEN ~ 1000000 * ce_specversion 1.0
//	  ce_id 42 ce_source shop ce_type order.created content-type application/json
//	  data {"order":42}
//
// A message sent with Mode Structured is the JSON event format in data,
// with content-type application/cloudevents+json; the driver reads both
// modes from anyone. A field the driver does not know becomes a free header
// of that name. An entry that is not a valid event (no ce_specversion and
// not structured, or a missing id, source or type) is delivered with
// Delivery.Err set to a [*driver.MalformedError], never dropped. A
// broadcast is the same fields as one JSON document ({"fields":[...],
// "data":base64}), since a Pub/Sub message is a single string.
//
// # Delivery semantics per pattern
//
//   - Event, Command, Query, Stream, Reply, DeadLetter (Streams): at least
//     once. Publish returns nil only once Redis answered every XADD of the
//     batch, sent as one pipeline; the XADDs of concurrent Publish calls
//     and the XACKs of concurrent Acks share pipelines
//     (Options.PipelineWorkers). A group receives each message once and
//     its members compete; groups are kept by Redis whether Durable or not.
//     Redis does not de-duplicate: a message published twice is stored and
//     delivered twice (the inbox de-duplicates on consume). A subscription
//     reads new entries Options.ReadAhead at a time (XREADGROUP COUNT,
//     within MaxInFlight) and reads more in the background while it hands
//     out what it has. Ack and Term are one XACK per call, sent at once;
//     they return without waiting for its reply (a failed XACK is logged,
//     and its entries come again after the ack wait), and Close waits for
//     the XACKs under way. Streams are trimmed to about Options.MaxLen
//     entries (dead letters only with DeadLetterMaxLen): a consumer that
//     falls further behind loses the oldest entries.
//   - Query: a stream per query destination; the bus's generic fallback
//     carries replies to a reply stream per bus instance (a private
//     subscription, trimmed to 10,000 entries, expiring an hour after its
//     last use, deleted at Close), correlated by the request's id, with the
//     bus's typed timeout. NativeRequestReply is false.
//   - Broadcast: Redis Pub/Sub, at most once, nothing stored: Publish
//     returns once the server took the messages; a subscriber that is not
//     connected misses them; Nack and Term change nothing. A durable
//     broadcast subscription is refused with [driver.ErrUnsupported].
//
// # Ordering
//
// A stream keeps publish order, and one consumer of a group reads it in
// that order; competing members of a group, though, share a stream with no
// regard to keys. The driver therefore claims OrderingByKey and keeps it
// for the Stream pattern across members: a stream's group has one reader
// at a time (a destination is one shard, read by one member). The members
// of a stream's group hold a lease (the key PREFIX:{name}:reader:GROUP,
// renewed every third of the ack wait, expiring after the ack wait); the
// others stand by and ask for it every reclaim interval. A member that
// takes the lease first takes over every entry pending in the group, in
// stream order, before it reads anything new, so each key's messages keep
// their publish order when the reader closes (the next one takes over
// within the reclaim interval) or dies (after the ack wait). The price is
// that a stream's group does not spread its work over members; scale out
// with more streams. Events and commands are not leased: their members
// compete, each sees its share in publish order, and there is no per-key
// order across members. Nack with a delay redelivers after newer messages.
//
// # Dead letters and retries
//
// Attempt is the entry's delivery count in the group (1 on first delivery;
// the count XPENDING reports after a reclaim). The bus dead-letters at its
// own attempt limit: it publishes to deadletter.<destination>, a stream like
// any other (with the reason, attempts and origin as ce_ extension fields),
// then terms. The driver ignores SubscribeOptions.MaxDeliveries.
//
// Nack with a delay keeps the entry pending for the same consumer, fresh,
// and delivers it again to that subscription when the delay is over (XCLAIM
// to itself, counting a delivery): NativeDelay holds while the nacking
// subscription lives. If it closes or its process dies first, another
// member reclaims the entry after the ack wait, which may be sooner than a
// delay longer than the ack wait.
//
// The driver is a [driver.DeadLetterStore]: DeadLetterDestinations scans
// for the dead-letter streams under the key prefix (SCAN TYPE stream, on
// every master of a Cluster); ReadDeadLetters reads one with XRANGE, oldest
// first, up to the entry that was last when it began, each with its entry
// id and a tag of the destination as Ref; DeleteDeadLetters removes entries
// by id (XDEL); and PurgeDeadLetters empties the stream (XTRIM MAXLEN 0),
// keeping its groups.
//
// # Reclaim
//
// An entry read by a consumer stays in the group's pending list until it is
// acked. Every subscription looks for entries to reclaim every
// Options.ReclaimInterval (default 1 s, at most half the ack wait) with
// XAUTOCLAIM: those idle for longer than its ack wait (default 30 s), whose
// consumer died. A live subscription resets the idle time of everything it
// holds every third of the ack wait (XCLAIM to itself with JUSTID, after
// checking in a script that the entry is still its own), so its long-running
// messages are never reclaimed from under it; entries read ahead and not
// handed out yet are kept fresh the same way. Close gives back what the
// subscription holds, handed out or read ahead, by setting those entries'
// idle time to the maximum: the next reclaim of any other member takes them
// at once, within the reclaim interval. A member that dies holds what it
// read ahead too, until the ack wait. Consumers that hold nothing are
// removed from their group when they close, and others idle for ten minutes
// with nothing pending with them.
//
// # Escape hatches
//
// [New] wraps a go-redis client made by the caller (any UniversalClient);
// closing the driver leaves it open. [Driver.Client] returns the client and
// [Driver.StreamKey] the key of a destination's stream, for XINFO, XRANGE or
// trimming by hand.
//
// # Errors and concurrency
//
// Errors are wrapped once with the package name and match the driver
// sentinels with errors.Is: ErrClosed after Close, ErrUnavailable for a lost
// or unreachable server (go-redis reconnects by itself on the next command;
// a Receive that fails is retried by the bus), ErrTooLarge and ErrInvalid
// before the wire, ErrUnsupported, ErrMalformed. All methods are safe for
// concurrent use. Every Close honours its context; a context that ended
// already still closes, with a second's grace to give back.
package redisbus
