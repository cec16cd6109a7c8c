package driver

import "context"

// DeadLetterStore is implemented by drivers that can browse and remove the
// messages held on their dead-letter destinations (pattern [DeadLetter],
// named by [DeadLetterOf]), for the bus's dead-letter API and the CLI's dlq
// commands. The bus dead-letters with Publish and replays with Publish; this
// interface only reads and removes.
//
// Contract:
//   - DeadLetterDestinations lists dead-letter destinations, sorted by name,
//     each once with Pattern DeadLetter: at least every one that holds
//     messages — all of them where the broker can enumerate its
//     destinations, otherwise those that this driver created or published
//     to. It may list some that hold nothing (a queue or topic that exists,
//     a destination emptied since).
//   - ReadDeadLetters calls fn with the messages held on dl, oldest first
//     (per partition or shard where the broker has several), without
//     removing them: after it returns, the same messages are held and a
//     later ReadDeadLetters sees them again. It stops when fn returns false,
//     when ctx is done, or after the messages that were held when it
//     started; it never waits for new ones. A destination that does not
//     exist holds nothing (no error). Messages that cannot be decoded are
//     passed with Message.Data set to the raw body and the attributes that
//     could be read, never skipped.
//   - Each [DeadLetterEntry] carries a Ref, an opaque string that names the
//     message on the broker for DeleteDeadLetters (a JetStream sequence, a
//     Redis entry id, a partition and offset, ...). Refs are stable while
//     the message is held.
//   - DeleteDeadLetters removes the messages named by refs from dl and
//     returns how many it removed; refs that name no message held on dl
//     (removed already, or held on another destination) are skipped without
//     error and remove nothing. A broker that can only remove from the head
//     of a log (Kafka) removes what it can and returns an error matching
//     [ErrUnsupported] naming the refs it kept; the count is then what it
//     removed.
//   - PurgeDeadLetters removes every message held on dl and returns how many
//     it removed.
type DeadLetterStore interface {
	DeadLetterDestinations(ctx context.Context) ([]Destination, error)
	ReadDeadLetters(ctx context.Context, dl Destination, fn func(DeadLetterEntry) bool) error
	DeleteDeadLetters(ctx context.Context, dl Destination, refs []string) (int, error)
	PurgeDeadLetters(ctx context.Context, dl Destination) (int, error)
}

// DeadLetterEntry is one message held on a dead-letter destination. The reason,
// attempts, origin, group and time of its dead-lettering are the Message's
// extensions [ExtDeadLetterReason], [ExtDeadLetterAttempts],
// [ExtDeadLetterOrigin], [ExtDeadLetterGroup] and [ExtDeadLetterTime].
type DeadLetterEntry struct {
	// Ref names the message on the broker for DeleteDeadLetters.
	Ref string
	// Message is the dead letter as the bus published it.
	Message *Message
}
