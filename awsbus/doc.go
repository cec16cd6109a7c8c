// Package awsbus is the eventbus driver for AWS SNS and SQS, on
// github.com/aws/aws-sdk-go-v2.
//
//	d, err := awsbus.Open(ctx, &awsbus.Config{Region: "eu-west-1"})
//	bus.Register("aws", d)
//
// # URLs
//
// Importing the package registers aws:// and sns+sqs:// with the driver
// package, so that eventbus.Open and the configuration file open it by URL:
//
//	aws://eu-west-1
//	aws://?region=us-east-1&endpoint=http://127.0.0.1:4566&prefix=shop&fifo=true
//
// The host is the region. Every field of [Config] has a query parameter
// ([ParseURL] lists them); an unknown parameter is an error naming it, and so
// is a bad value. Secrets given in a URL (secret_access_key, session_token)
// never appear in an error.
//
// # Configuration and credentials
//
// [Config] covers the region, an endpoint override (an emulator, a VPC
// endpoint), the name prefix of every topic and queue, FIFO, content-based
// de-duplication, a KMS key for server-side encryption, and the queue
// settings: visibility timeout, long-poll wait, max receive count (the
// redrive policy) and retention. Credentials come from the standard AWS chain
// (environment, shared files and profiles, SSO, web identity, ECS and EC2
// roles); explicit keys are optional, and are never logged nor written into
// an error. Config.AWSConfig hands over a ready aws.Config instead.
//
// # Topology
//
// Logical destinations become SNS and SQS names through one function
// ([Config.TopicName], [Config.QueueName]): the prefix, a readable part
// (dots become '_', cut to SQS's 80 characters) and 64 bits of a SHA-256 of
// the exact logical name (and group), so that names that read alike never
// share a resource; FIFO names end in ".fifo". Everything is created
// idempotently on first use.
//
//   - Events (events.<type>): one SNS topic per event type. Each consumer
//     group is an SQS queue subscribed to the topic with raw message delivery,
//     with the queue policy that lets that topic (and nothing else) send to
//     it. A subscription without a group gets a queue of its own, removed
//     when it closes. A topic per type selects what a filter policy on the
//     type would select on a shared topic, without spending a message
//     attribute on it, and without every group queue's subscription being
//     evaluated for every event.
//   - Commands (commands.<service>.<type>): one SQS queue per command type
//     of a service, published to directly; every instance of the service
//     consumes it, so exactly one handles each command. Commands sent before
//     any handler starts wait in the queue. A queue per type rather than one
//     per service: a subscription handles one destination, and on a shared
//     queue an instance would receive the types it has no handler for (SQS
//     cannot filter what a receive returns).
//   - Queries: the request goes to the query's queue like a command; the
//     reply to the requester's reply queue (replies.<instance>), one per bus
//     instance, created when the bus starts and removed when it closes. The
//     driver has no native request/reply (Capabilities.NativeRequestReply is
//     false): the bus's generic fallback pairs replies and times out with its
//     typed error. A reply to a requester that is gone fails (its queue no
//     longer exists).
//   - Streams (streams.<name>): always a FIFO topic, and FIFO group queues,
//     with the key as message group id.
//   - Broadcast (broadcast.<type>): a topic; every subscription has a queue
//     of its own, removed when it closes: every instance receives each
//     message, and nothing is kept for an instance that is not running.
//   - Dead letters (deadletter.<origin>): a topic, like an event type, and
//     one queue subscribed to it that keeps its messages (the keeper queue,
//     created with the topic, whoever publishes or subscribes first, and
//     tagged eventbus-destination with the logical name). The bus publishes
//     dead letters to the topic; groups subscribed to the destination get
//     queues of their own, so consumers and the dead-letter console never
//     take messages from each other. With Config.MaxReceiveCount, group
//     queues and command and query queues get a redrive policy to the
//     keeper queue of their dead-letter destination, so that SQS moves a
//     message there after that many receives even when no process of ours
//     counts them (a queue created earlier without it keeps its
//     attributes: the driver warns and uses it as it is).
//
// # Delivery semantics
//
// Publish returns once SNS (PublishBatch) or SQS (SendMessageBatch) accepted
// every message, in batches of up to ten entries and 256 KiB; refused entries
// come back as a [*BatchError] naming each message. Envelopes are checked with
// driver.CheckEnvelope, and a message over [MaxMessageSize] (190 KiB: data
// that is not text travels as base64 and must still fit SQS's 256 KiB) fails
// with a *driver.TooLargeError before the wire. Events published while a group
// has no queue yet are not kept for it: a group starts with what is published
// after its queue exists (DeclareGroup creates it without consuming).
//
// Delivery is at least once. A subscription long-polls its queue (at most
// Config.WaitTime per call) while it holds fewer than MaxInFlight deliveries.
// Ack and Term delete at once (DeleteMessageBatch). Nack sets the visibility
// timeout to the delay (whole seconds, up to 12 h; 0 redelivers at once), so
// delays are native. A receive asks for a visibility timeout of at most 4 s
// (so that a poll cancelled in flight hides its messages no longer), and
// every held delivery — prefetched or running in a handler — has it renewed
// to the full timeout before it runs out, so it never times out while the
// process lives (should it run out all the same, under a stalled process
// or network, and the subscription receive the message again while it
// holds it, the delivery it holds goes on with the new receipt handle and
// no second one is made); SubscribeOptions.AckWait (rounded up to whole
// seconds, at least 2 s) or Config.VisibilityTimeout is how long a dead
// process holds a message. Close gives back at once (visibility 0) every
// delivery it holds, received or handed out (up to four batch calls at
// once); it waits for the long poll in flight unless its context ends, or
// its deadline comes within 300 ms (kept for the give-back); a poll
// cancelled that way may have taken messages that no one sees for up to 4 s. Attempt is SQS's ApproximateReceiveCount.
//
// Concurrent publishers share batch calls: a Publish of fewer than a batch's
// messages to a topic or queue joins the calls of other callers to the same
// destination. It leaves at once while fewer than two batch calls to that
// destination are in flight (or, up to eight, when a full batch is waiting),
// taking with it whatever other callers left waiting (up to ten entries and
// 256 KiB); otherwise it waits for a call to return and leaves in the next
// batch, with the messages that piled up meanwhile. A lone publisher waits
// for nothing; many share calls, at the cost of up to one call's time of
// waiting each. Each caller gets the outcome of its
// own messages: an error of the call, or a *BatchError naming only its
// refused entries. The messages of one Publish stay together and in order in
// one call; larger Publish calls, and replies, make calls of their own. A
// Publish whose context ends while its messages wait returns at once without
// sending them; one whose context ends during their call returns at once
// too, their fate unknown (as for any call cancelled in flight), and the call
// is cancelled when every caller in it has given up. Close waits for the
// calls still running for their callers; when its context ends first, it
// cancels them, waits for them to return and reports the context's error.
//
// # FIFO and ordering
//
// With Config.FIFO, events, commands and broadcasts use FIFO topics and
// queues; streams always do. The message group id is the key (a message
// without a key uses its id: no order to keep, no head-of-line blocking),
// hashed when SQS would refuse it as it is. The de-duplication id is a
// SHA-256 of (source, id), or the body's digest with
// Config.ContentBasedDeduplication. SQS drops a duplicate within its
// five-minute window without telling the sender, so driver.ErrDuplicate is
// never returned: a republished message is simply not delivered again.
// Capabilities.OrderingByKey holds for streams, and for every pattern with
// Config.FIFO; standard queues do not keep order.
//
// # Message attributes
//
// There is no official CloudEvents binding for SQS or SNS; this driver maps
// the envelope in the style of the binary content mode of the HTTP binding.
// SQS carries at most ten message attributes (String type here):
//
//   - ce-<name> for each CloudEvents attribute and extension, in this order of
//     precedence: specversion, id, source, type, subject, the extensions
//     that are not the bus's own (by name: what filters name, see Attribute
//     selection), time, datacontenttype, dataschema, traceparent,
//     tracestate, correlationid, causationid, replyto.
//   - eventbus, when needed, a JSON object with what has no attribute of its
//     own: {"key": the partition key, "header": {name: [values]}, "ce":
//     {the attributes beyond the limit, and any with an empty value}, "enc":
//     "base64" when the body is base64 (data that is not text SQS carries
//     unchanged) or "empty" (no data; the body is "-")}. When it is present,
//     nine ce- attributes at most travel on their own.
//   - The body is the data.
//
// A message with Mode driver.Structured travels in the CloudEvents JSON
// format instead: the whole event in the body (data inline when it is
// compact JSON, else data_base64), content-type
// application/cloudevents+json, and the eventbus attribute for the key and
// headers. Receiving reads both modes, and a body that is a JSON event
// without any attribute; message attributes of other senders that are
// neither ce- nor eventbus become headers.
//
// # Attribute selection
//
// The driver claims driver.Capabilities.AttributeSelect: a subscription to
// an event destination with SubscribeOptions.Select (the bus passes the
// Exact filters of a subscription's filter there) gives the SNS
// subscription of its queue (the group's, or its own) a filter policy, so
// that SNS does not deliver to the queue the events it excludes. The bus
// still evaluates the whole filter on what arrives.
//
// What is selected: events only (commands go to their queue directly, with
// no SNS subscription to filter), on every CloudEvents attribute and
// extension but partitionkey (the key travels in the eventbus attribute),
// at most five of them (SNS's limit of keys in a filter policy; the first
// five of Select, the bus filters the rest). For each, the policy accepts
// the selected value of the attribute ce-<name>, or a message without
// that attribute: SNS sees only message attributes, and a message that
// carries the attribute elsewhere must still pass. So SNS leaves out
// exactly the events that carry the attribute on its own with another
// value; these pass whatever their value, and the bus filters them:
//
//   - binary-mode events whose attribute did not fit the ten (it rides in
//     the eventbus attribute): every one of specversion, id, source, type
//     and subject always fits, and so do the extensions users name, ahead
//     of the others, unless an event has many of them;
//   - structured-mode events (the attributes are in the body);
//   - other producers' events that name it otherwise or not at all.
//
// One exception, which driver.SubscribeOptions.Select allows SNS: SNS
// evaluates exists:false as false for a message without any message
// attribute, and no filter policy on message attributes lets such a message
// through, so another producer's structured event sent with no attribute
// at all does not reach a subscription with a selection (ours always carry
// one). For such producers, write the condition in SQL
// (eventbus.SQL("tenant = 'acme'")), which is never pushed down.
//
// A group has one selection, its SNS subscription's. Each subscription of
// the group sets the policy of its own selection (none removes it), when
// the policy differs: the policy follows the latest subscription. Members
// of one group with different filters therefore all receive what the
// latest member selected; the bus still filters each member by its own
// filter, but events only the others' filters match may not arrive at all:
// give members of a group one filter. On AWS a changed policy takes up to
// 15 minutes to apply everywhere (SNS is eventually consistent): in that
// while, a subscription may receive what the old policy lets through, and
// miss what only the new one does. [Driver.DeclareGroup] leaves the policy
// as it is.
//
// A selection is an optimisation, and SNS refusing its policy fails no
// Subscribe as long as the subscription still delivers all that the
// selection allows; the driver logs a warning and the bus filters what
// arrives. SNS refuses a policy over 256 KiB (the driver does not send
// one), a 201st policy on a topic (subscriptions that processes left
// behind keep theirs), or for lack of permission. Then a private
// subscription has no policy; a group keeps the policy in place when it
// lets through everything the selection does (no policy, or one of the
// driver's own selecting a part of the same attributes and values), and
// otherwise has it removed. When the removal is refused too, Subscribe
// fails with a [*FilterPolicyError]: the policy in place would keep out
// events the subscription's filter matches.
//
// # Permissions
//
// The driver calls these actions (IAM: sns:<Action>, sqs:<Action>):
//
//   - Publish: sns:Publish (PublishBatch), sqs:SendMessage
//     (SendMessageBatch), and for the resources created on first use
//     sns:CreateTopic, sqs:CreateQueue, sqs:GetQueueUrl and
//     sqs:GetQueueAttributes (a queue's ARN); for keeper queues (dead-letter
//     destinations, and Config.MaxReceiveCount) sqs:TagQueue too, as they
//     are created tagged, and sns:Subscribe. With Config.KMSKeyID, what KMS
//     asks of SNS and SQS for the key.
//   - Subscribe: the same creation calls, sns:Subscribe,
//     sqs:ReceiveMessage, sqs:DeleteMessage (Ack, Term),
//     sqs:ChangeMessageVisibility (Nack, renewals, Close); for private
//     queues (subscriptions without a group, broadcasts, the reply queue)
//     sqs:DeleteQueue and sns:Unsubscribe on close.
//   - Subscriptions to events: sns:GetSubscriptionAttributes and
//     sns:SetSubscriptionAttributes, to read and set the filter policy. A
//     subscription without a selection does without them: when reading
//     the policy is refused for lack of permission, it is left as it is,
//     with a warning (a policy that an earlier member set then still
//     narrows what the group's queue gets). A subscription with a
//     selection needs sns:SetSubscriptionAttributes, unless the policy in
//     place already delivers all it allows (see Attribute selection).
//   - When sns:Subscribe answers that the queue's subscription exists with
//     other attributes (a filter policy, or raw message delivery turned
//     off): sns:ListSubscriptionsByTopic to find it,
//     sns:GetSubscriptionAttributes and, to turn raw message delivery back
//     on, sns:SetSubscriptionAttributes; without them Subscribe fails.
//   - Dead letters: sqs:ListQueues and sqs:ListQueueTags
//     (DeadLetterDestinations), sqs:ReceiveMessage,
//     sqs:ChangeMessageVisibility, sqs:DeleteMessage and
//     sqs:GetQueueAttributes on the keeper queues.
//
// # Dead letters and retries
//
// Retries and dead-lettering are the bus's: a failed handler nacks (with the
// retry policy's delay as visibility timeout), and at its attempt limit the
// bus publishes to the dead-letter destination and terms the delivery
// (deletes it). Config.MaxReceiveCount adds SQS's own redrive as a safety
// net; a message redriven by SQS keeps its attributes but carries none of the
// bus's dead-letter extensions (reason, attempts...).
//
// The driver implements driver.DeadLetterStore on the keeper queues.
// DeadLetterDestinations lists the keeper queues under the prefix (by
// their tag: a destination name longer than a tag value's 256 characters is
// not listed). SQS cannot look at a queue without receiving from it, so
// ReadDeadLetters receives every message of the keeper queue with a
// visibility timeout of 60 s, and makes them all visible again before it
// passes them on, oldest first (by FIFO sequence number, else by the time
// SQS stored them). What this means:
//
//   - While a read runs, its messages are hidden from other readers of the
//     keeper queue (two consoles reading at once each see a part); consumers
//     of the destination are not affected (they have queues of their own).
//     A process that dies during a read hides them for up to 60 s; a read
//     that lasts longer than 30 s renews the hold of what it has. A message
//     received twice in one read is passed on once, and given back or
//     deleted with its latest receipt handle (the only one SQS honours).
//   - Every read adds one to the messages' ApproximateReceiveCount, and
//     holds the whole queue in memory (fn stopping early saves the calls to
//     fn, not the receives).
//   - The read stops when it has as many messages as SQS's
//     ApproximateNumberOfMessages said at the start and one long poll of 1 s
//     brings nothing more: on AWS, a message stored during the read may or
//     may not be in it.
//   - A Ref is the SQS message id: the same on every read, and across a
//     redrive. DeleteDeadLetters and PurgeDeadLetters receive the queue the
//     same way and delete what they were asked to (PurgeDeadLetters deletes
//     everything, counting it; SQS's PurgeQueue counts nothing and runs once
//     a minute at most).
//   - On FIFO, the driver publishes every dead letter as a message group of
//     its own (a FIFO queue hides a group's later messages while one is
//     received, which would hide them from a read). Messages that SQS
//     redrove from a FIFO queue keep their group (the key): a read reaches
//     the first ten of each group at most on AWS, the first one on fauxqs.
//     It compares what it read with what SQS still counts as visible while
//     it holds them (ApproximateNumberOfMessages), and when some were out
//     of reach, ReadDeadLetters returns a *HiddenDeadLettersError after
//     passing on the others. PurgeDeadLetters reads again after each
//     deletion (which uncovers the next messages of the groups) until it
//     has removed them all; DeleteDeadLetters does the same while refs are
//     left and returns a *HiddenDeadLettersError for refs it could not
//     reach. To read such a queue whole, move its messages elsewhere with
//     SQS's own tools (DeadLetterQueueURL). On a FIFO keeper queue, a
//     message stored at the very end of a read may be counted as hidden.
//
// [Driver.DeadLetterQueueURL] returns a keeper queue's URL, for SQS's own
// tools (StartMessageMoveTask, the console's redrive).
//
// # Escape hatches
//
// [Driver.SNS] and [Driver.SQS] return the SDK clients; [Driver.QueueURL]
// and [Driver.TopicARN] create and name the resources of a destination, to
// inspect, purge or redrive them with those clients.
package awsbus
