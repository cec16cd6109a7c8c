// Package drivertest is the conformance suite of the driver contract: every
// driver of eventbus runs it against its real broker, from a test that is a
// harness and one call.
//
//	func TestConformance(t *testing.T) {
//		url := os.Getenv("MYBROKER_URL")
//		drivertest.RunConformanceTests(t, drivertest.Harness{
//			Open: func(ctx context.Context) (driver.Driver, error) {
//				return mybus.Dial(ctx, url, nil)
//			},
//		})
//	}
//
// Harness.Open must return a new, independent connection to the same broker
// on every call: the suite opens several to play several service instances
// (a publisher, competing members of a consumer group, a requester and a
// responder), and closes each one it opens. The other fields of [Harness]
// say what the suite cannot learn from Capabilities: how to simulate a
// process that dies (Crash), whether the broker de-duplicates
// (Deduplicates), and whether the driver can send structured content mode
// (BinaryModeOnly).
//
// # What the suite asserts
//
// Every subtest works on destinations, groups and message ids with a random
// suffix, so that leftover state on an external broker (or its
// de-duplication window) never interferes, and every wait is bounded: the
// suite never hangs. The tests that a driver's Capabilities
// do not call for are skipped with the name of the missing capability.
//
//   - Capabilities: Name is set, MaxMessageSize is positive, Patterns is
//     non-empty and valid, and NativeRequestReply holds exactly when the
//     driver implements [driver.RequestReplier].
//   - PublishSubscribe: for every served pattern but Query, what is published
//     after Subscribe returns is received once, with its content intact.
//   - StartNew: a new subscription receives nothing published before it.
//   - Attributes: every CloudEvents attribute and extension, Key, multi-valued
//     headers, binary and empty data round-trip exactly; time keeps at least
//     millisecond precision.
//   - Groups (ConsumerGroups): members of one group share the messages, each
//     delivered once and both members receiving some; different groups each
//     receive every message. Private subscriptions (Group "") each receive
//     every message.
//   - Settlement: an acked or termed message is not redelivered. With
//     Redelivery, a nacked message is, with Attempt incremented, and not
//     before the Nack's delay with NativeDelay. HeldBatch: after one
//     delivery of a batch is acked and the other held unsettled past
//     AckWait by a live subscription, neither comes back, to it or to
//     another member of its group; once the holder closes, the held one goes
//     to the other member within 5 s and the acked one does not.
//     CloseGivesBack (Redelivery, ConsumerGroups): a member holding
//     deliveries, with an AckWait of 30 s, closes its subscription or its
//     driver; another member receives every message within 5 s, four rounds.
//     CrashRedelivers (Harness.Crash): the unsettled delivery of a member
//     whose process dies reaches another member after AckWait, Attempt
//     incremented. With Durable, a delivery left unsettled by a member that
//     leaves goes to the next member, and a durable group resumes with
//     exactly the messages it did not ack, published before or while it was
//     away. A subscription hands out no more than MaxInFlight unsettled
//     deliveries.
//   - OrderByKey (OrderingByKey): one consumer sees each key's messages in
//     publish order.
//   - MaxMessageSize: a message of exactly MaxMessageSize arrives intact; one
//     byte more fails with [driver.ErrTooLarge] (a [*driver.TooLargeError]),
//     alone or in a batch, and nothing of that batch is delivered.
//   - RequestReply (NativeRequestReply): concurrent requests each get their
//     own reply; a request nobody answers ends with the context's deadline;
//     a request nobody subscribes to fails promptly with
//     [driver.ErrNoResponders].
//   - Batches: one Publish of 100 messages, which the driver does not retain
//     (changing them after Publish returned changes nothing delivered);
//     Receive never returns more than asked, nor an empty batch with a nil
//     error.
//   - Close: closing a subscription or the driver unblocks Receive with
//     [driver.ErrClosed]; after Close, Publish, Subscribe, Request, and
//     Receive, Ack, Nack and Term fail with ErrClosed; closing twice is
//     safe; a cancelled context unblocks Receive with the context's error.
//     DeadlineKept: Subscription.Close and Driver.Close, holding unsettled
//     deliveries, return within 2 s of a 100 ms deadline, and with a context
//     that ended already they still close.
//   - Deduplication: the same id from two sources, or to two destinations, is
//     delivered each time. Publishing the same message twice yields one
//     delivery and [driver.ErrDuplicate] when Harness.Deduplicates says so
//     (also within a batch, whose other messages are delivered), and two
//     deliveries otherwise. A [driver.DeduplicatedPublisher] is checked
//     through PublishDeduplicated, and its Publish must deliver a repeat
//     twice.
//   - Envelope: what [driver.CheckEnvelope] refuses fails with
//     [driver.ErrInvalid] (a [*driver.InvalidError]) and nothing of its
//     batch is delivered: ids that differ from a valid one by surrounding
//     white space or CR LF, extension names with a space, a colon, CR LF,
//     upper case, over 20 characters or reserved (id, source, correlationid),
//     extension values with CR LF, header names with a space, a colon or a
//     ce- prefix. Valid extension names, at the limit of 20 characters, carry
//     non-ASCII values exactly.
//   - ContentMode: messages published with Mode Structured (JSON data and
//     binary data) arrive with every attribute, extension, header and their
//     data intact, and with Mode Structured unless Harness.BinaryModeOnly;
//     a binary one arrives with Mode Binary.
//   - DeclareGroup (a [driver.GroupDeclarer] that claims Durable): a group
//     declared twice before any member keeps what is published meanwhile;
//     its first member receives all of it once. A GroupDeclarer that does not
//     claim Durable refuses with [driver.ErrUnsupported].
//   - Load: 10,000 messages from 8 concurrent publishers, single and batched,
//     reach a group of two members, one of them receiving from two goroutines
//     at once; none is lost. Duplicates are logged, and fail the test only
//     on a driver that does not claim Redelivery.
//
// Across all subtests, no delivery of a well-formed message has Err set, and
// every Attempt is at least 1.
//
// # Timing
//
// The suite takes about thirteen seconds on the in-memory driver, most of it
// spent proving that something does not happen (no redelivery within the ack
// wait, nothing delivered of a refused message). The subtests that wait on
// the broker's timers run in parallel. A driver that loses messages makes
// the suite wait out its timeouts (ten seconds per wait, five for a closing
// member to give back what it holds), never longer.
package drivertest

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

// Harness opens connections to one broker and says what the suite cannot
// learn from the driver's Capabilities.
type Harness struct {
	// Open returns a new, independent connection to the same broker each time it
	// is called; the suite calls it several times in one test to play several
	// service instances, and closes every driver it opens.
	Open func(ctx context.Context) (driver.Driver, error)

	// Crash, when set, ends d as if the process holding it died: its link to
	// the broker is cut without closing its subscriptions or settling or
	// giving back their deliveries, so that the broker redelivers them only
	// after their AckWait (a NATS driver closes its connection underneath;
	// membus has Driver.Crash). The suite still calls d.Close afterwards and
	// accepts any error from it. Without Crash, Settlement/CrashRedelivers
	// is skipped.
	Crash func(d driver.Driver) error

	// Deduplicates says that the broker drops a publish of a message with
	// the same (source, id, destination) as one it stored recently, and that
	// Publish (PublishDeduplicated, for a driver.DeduplicatedPublisher) then
	// returns an error matching driver.ErrDuplicate. The suite checks the
	// claim either way.
	Deduplicates bool

	// BinaryModeOnly says that the driver sends every message in binary
	// content mode whatever Message.Mode asks, so that a message published
	// as Structured is received with Mode Binary. The content is checked
	// either way.
	BinaryModeOnly bool

	// Limitations names subtests that this broker cannot pass, by their path
	// below the test that runs the suite ("Settlement/CloseGivesBack"), with
	// the reason; they are skipped with it. It is for a documented limitation
	// of a particular broker version, never for a defect of the driver.
	Limitations map[string]string

	// InjectDeadLetter, when set, stores body on the dead-letter destination
	// dl through the connection d the way the broker would hold a message
	// that is no envelope (no CloudEvents attributes, body as is), bypassing
	// the driver's encoding. RunDeadLetterTests uses it to check that
	// ReadDeadLetters passes such a message on; without it, that subtest is
	// skipped.
	InjectDeadLetter func(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error
}

// RunConformanceTests runs every conformance test that the driver's
// Capabilities call for, each as a subtest of t.
func RunConformanceTests(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("drivertest: Harness.Open is nil")
	}
	s := &suite{h: h}
	d := s.open(t)
	s.caps = d.Capabilities()
	_, s.implementsRR = d.(driver.RequestReplier)
	_, s.implementsGD = d.(driver.GroupDeclarer)
	closeDriver(t, d)

	t.Run("Capabilities", s.testCapabilities)
	t.Run("PublishSubscribe", s.testPublishSubscribe)
	t.Run("StartNew", s.testStartNew)
	t.Run("Attributes", s.testAttributes)
	t.Run("CompetingConsumers", s.testCompetingConsumers)
	t.Run("GroupFanOut", s.testGroupFanOut)
	t.Run("PrivateSubscriptions", s.testPrivateSubscriptions)
	t.Run("Settlement", s.testSettlement)
	t.Run("OrderByKey", s.testOrderByKey)
	t.Run("MaxMessageSize", s.testMaxMessageSize)
	t.Run("RequestReply", s.testRequestReply)
	t.Run("Batches", s.testBatches)
	t.Run("Close", s.testClose)
	t.Run("Deduplication", s.testDeduplication)
	t.Run("Envelope", s.testEnvelope)
	t.Run("ContentMode", s.testContentMode)
	t.Run("DeclareGroup", s.testDeclareGroup)
	t.Run("Load", s.testLoad)
}

// suite carries what every subtest needs: the harness and the capabilities
// the driver claims.
type suite struct {
	h            Harness
	caps         driver.Capabilities
	implementsRR bool
	implementsGD bool
}
