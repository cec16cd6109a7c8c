// Package kafkabus is the eventbus driver for Apache Kafka, on franz-go
// (github.com/twmb/franz-go): every pattern of the bus over topics and
// consumer groups, messages in the CloudEvents Kafka protocol binding.
//
// # URLs
//
// Importing the package registers the kafka:// scheme with the driver
// package, so that driver.OpenURL and the configuration file open it:
//
//	kafka://127.0.0.1:9092
//	kafka://app:s3cret@kafka1:9093?brokers=kafka2:9093&tls=true&sasl_mechanism=SCRAM-SHA-512
//	kafka://kafka1:9092?partitions=12&replication_factor=3&acks=all&compression=zstd
//
// The host is the first seed broker, user information authenticates with
// SASL, and every field of [Config] has a query parameter ([ParseURL] lists
// them; [Config.URL] writes one back). An unknown parameter is an error, and
// errors never contain the password.
//
// # Configuration
//
// [Open] connects from a [Config]: seed brokers, client id, SASL (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512 — PLAIN is refused without TLS unless
// SASLConfig.AllowPlaintext says otherwise, since it sends the password in
// clear), TLS (CA file, client certificate, server name), and the [Options]:
// topic and group prefixes; creation of missing topics (on by default) with
// their partitions and replication factor; producer acks ("all" by default)
// and idempotence (on by default), compression, linger, batch and buffer
// sizes; fetch sizes and wait; session, rebalance and heartbeat timing and
// the partition balancer (cooperative-sticky by default); the default
// MaxInFlight and the in-place retries of a nack. [Config.Validate] reports
// every problem at once. Zero values are the documented defaults.
//
// A logical destination is a topic of the same name ("events.order.created")
// after Options.TopicPrefix; a character Kafka refuses becomes '_' and a
// name that had to change, or is longer than 249 bytes, gets a hash of the
// exact name appended ([Driver.Topic]). A group is the Kafka consumer group
// "<GroupPrefix><group>.<topic>" ([Driver.GroupID]): a Kafka group here
// consumes one destination, so the same group name on two destinations never
// couples their rebalances.
//
// # Delivery semantics per pattern
//
// Every pattern is served by topics; Capabilities claims Durable,
// ConsumerGroups, OrderingByKey and Redelivery, not NativeDelay (the bus
// waits before it nacks) nor NativeRequestReply (the bus's generic reply
// fallback serves queries).
//
//   - Publish produces through franz-go's promise-based produce: the records
//     of a call and of concurrent calls share batches, and Publish returns nil
//     only after the brokers acknowledged every record with the configured
//     acks (all in-sync replicas by default, through the idempotent
//     producer, so that a retried produce never writes twice). Envelopes are
//     checked with driver.CheckEnvelope and sizes against MaxMessageSize
//     before anything is written. With Acks "none" the guarantee is at most
//     once.
//   - Event, Command, Stream, DeadLetter with a group: the Kafka consumer
//     group of the destination; members compete for partitions, each group
//     receives every message. A group that has no committed offset yet gets
//     the end offsets committed before its first member joins (the start
//     with StartFirst), so that everything published after Subscribe returns
//     reaches it; Subscribe returns once the member joined. Offsets are
//     committed only past records that were settled (Ack or Term), never
//     ahead of processing: the commit offset of a partition is its first
//     unsettled record, sent by a commit loop at once after each settlement
//     (settlements that arrive during a commit share the next one). A
//     durable and a non-durable group behave alike: the broker keeps the
//     offsets of an empty group for its offsets.retention.minutes.
//   - Query: a topic consumed by the service's group; the reply goes to the
//     requesting bus instance's Reply topic, which that instance reads
//     without a group; the bus correlates replies and ends a query with its
//     typed timeout error.
//   - Broadcast and Reply, and every subscription without a group: a private
//     reader of every partition from its end offset (start offset with
//     StartFirst), listed before Subscribe returns; nothing is committed and
//     nothing is kept for it when it closes.
//
// A delivery handed out and not settled never loses its owner while the
// process lives: Kafka has no per-message deadline, the member's heartbeats
// keep its partitions. SubscribeOptions.AckWait sets the group session
// timeout (raised to Options.MinSessionTimeout, the broker's minimum): how
// long a dead process keeps its partitions.
//
// Attempt counts deliveries to the group, across its members. Kafka does
// not count deliveries, so the driver keeps the count where the group's
// offsets are: every offset commit of a member carries, as its metadata, a
// delivered mark — the offset after the last record the member handed out,
// and the attempts of the record at the committed offset. The member
// commits it with the commits its settlements cause, and at the latest
// 50 ms after handing records out while some are unsettled. The
// next owner of the partition reads the mark with the committed offset:
// the records below the mark were delivered once more than it saw, the one
// at the committed offset as many times as the mark says, so a message that
// makes every member die comes back with a growing Attempt and the bus
// dead-letters it at its attempt limit. A member that dies before its mark
// reached the broker (within 50 ms and a round trip of the hand-out) leaves
// the count one short. Through the retry topic the count travels in the
// eventbus-attempts header.
//
// # Rebalances
//
// Partitions move with the cooperative-sticky balancer by default: a
// rebalance takes away only the partitions that must move, and the others
// keep being consumed. Before a member gives a partition up it stops handing
// out its records, waits until the deliveries it handed out are settled (at
// most three quarters of RebalanceTimeout, or until the subscription
// closes), and commits what was settled; what is left goes, uncommitted, to
// the partition's next owner. Close does the same at once: it commits what
// was settled and leaves the group, so that what it fetched or held goes to
// another member without waiting for a session timeout.
//
// # Ordering
//
// The key of a message (Message.Key) is the record key, so messages of one
// key go to one partition and reach a group's consumer in publish order;
// partitions are consumed concurrently. A nacked message is delivered again
// after the partition's later messages, and one that went to the retry topic
// is delivered after what was published meanwhile: retries break the order
// of their key, as they must to keep the partition moving.
//
// # Dead letters and retries
//
// Nack never blocks a partition for ever. In a group, a nacked delivery is
// handed out again from memory up to Options.InPlaceRetries times (3 by
// default; the partition's other records go on, only its commit waits);
// after that it is produced, with its key, value and headers and an
// eventbus-attempts header, to the tail of the group's retry topic
// "<topic>.retry.<group id>", which the group also consumes, and its
// original is committed. Without a group, a nacked delivery is handed out
// again from memory. The bus dead-letters at its own attempt limit: it
// publishes to the DeadLetter destination's topic ("deadletter.<origin>"), a
// copy that keeps the original attributes and headers plus the
// deadletterreason, deadletterattempts and deadletterorigin extensions, and
// then terms the delivery (Term commits past it, as Ack).
//
// The Driver is a driver.DeadLetterStore. ReadDeadLetters reads a
// dead-letter topic with a client of its own, in no group, from each
// partition's log start to the high watermark it had when the read began
// (offsets that never come as records — transaction markers, records
// compacted or removed meanwhile — do not keep it waiting);
// a Ref is "<topic>/<partition>/<offset>". A Kafka log loses records only
// from its head: DeleteDeadLetters advances a partition's log start
// (DeleteRecords) past the refs that form an unbroken run from it, keeps
// the others and then returns an error matching driver.ErrUnsupported that
// names them. PurgeDeadLetters advances every log start to the high
// watermark. DeadLetterDestinations lists the "deadletter." topics under
// TopicPrefix, and those the driver published to.
//
// # Content modes
//
// Messages follow the CloudEvents Kafka protocol binding. In binary mode (the
// default) every attribute and extension is a "ce_" header (ce_specversion,
// ce_id, ce_type...), datacontenttype is the content-type header, the key is
// the record key and the ce_partitionkey attribute (on receipt the record
// key wins; ce_partitionkey fills in for a record without one), free headers are
// record headers, one per value, and the value is the data. A message with
// Mode driver.Structured is sent as application/cloudevents+json, the JSON
// event format in the value. On receipt both modes are read, and Message.Mode
// says which arrived; a record that is neither (no ce_specversion, missing
// id, source or type) is delivered with Delivery.Err set to a
// *driver.MalformedError and its raw value, so that the bus dead-letters it.
// Debian's kcat and the CloudEvents Go SDK's Kafka binding read what the
// driver writes, and the driver reads what they write (interop_test.go).
// The header names content-type and eventbus-attempts belong to the driver.
//
// MaxMessageSize is Options.BatchMaxBytes (Kafka's default message.max.bytes,
// 1,000,012 bytes) less 64 KiB for the record's framing; a structured-mode
// record whose JSON outgrows the batch is refused with a
// *driver.TooLargeError as well.
//
// # Escape hatches
//
// [Driver.Client] is the franz-go client that produces, [Driver.Admin] a kadm
// admin client on it, [Driver.Topic] and [Driver.GroupID] the names the
// driver uses; Config.Dialer replaces the network dialer.
//
// # Errors and concurrency
//
// Errors are wrapped once with the package name and match the driver
// sentinels with errors.Is: ErrClosed after Close, ErrUnavailable for
// brokers that cannot be reached, ErrTooLarge, ErrInvalid, ErrUnsupported,
// ErrMalformed on deliveries. All methods are safe for concurrent use. Close
// closes every subscription and then the producing client; with the brokers
// gone it returns by its context's deadline, and the clients' goroutines end
// when their requests time out.
package kafkabus
