package driver

import (
	"context"
	"time"
)

// UnconfirmedPublisher is implemented by drivers that can publish at most
// once: hand messages to the connection without waiting for the broker to
// confirm them (core NATS without a flush, a JetStream subject without
// waiting for the stream's ack). The bus uses it for the destinations a
// route marks at-most-once, in its pipelined Publisher only.
//
//   - PublishUnconfirmed returns once msgs were handed to the client (its
//     write buffer); nil says nothing about the broker having them. A message
//     may be lost, for instance when the connection drops before the buffer
//     is written; it is never sent twice.
//   - It refuses what Publish refuses, the same way and before the wire
//     ([*TooLargeError], [*InvalidError], [ErrClosed], [ErrUnsupported]).
//   - It does not retain msgs or their Data after returning.
type UnconfirmedPublisher interface {
	PublishUnconfirmed(ctx context.Context, dest Destination, msgs []*Message) error
}

// Deduplicator is implemented by drivers whose broker drops a message
// published again to the same destination with the same (source, id)
// within a window, so that publishing again after a failure or a lost
// confirmation stores the message once. The bus requires it for the
// destinations a route marks exactly-once.
type Deduplicator interface {
	// DeduplicationWindow is how long the broker remembers a published
	// (source, id) on destinations of pattern p; zero when it does not
	// de-duplicate them.
	DeduplicationWindow(p Pattern) time.Duration
}

// DeduplicatedPublisher is implemented by a [Deduplicator] whose broker
// de-duplicates only the messages the publisher marks, at a cost on every
// marked message (JetStream's Nats-Msg-Id: a digest to compute, a header
// to parse, an entry in the stream's duplicate table). Its Publish leaves
// the mark off — a message published twice through it is stored twice, as
// at-least-once allows — and PublishDeduplicated puts it on. The bus
// publishes through PublishDeduplicated what a route marks exactly-once,
// and dead letters.
//
//   - PublishDeduplicated is Publish, with the de-duplication the Driver
//     contract describes: by (source, id, destination) and
//     [Message.DedupParts], a dropped repeat reported with [ErrDuplicate]
//     after the rest of the batch is stored, within DeduplicationWindow of
//     dest's pattern. Where that window is zero it is Publish.
//   - A driver that retries a publish by itself (after a lost confirmation
//     or connection) stores a message once through PublishDeduplicated; it
//     may store it twice through Publish.
type DeduplicatedPublisher interface {
	PublishDeduplicated(ctx context.Context, dest Destination, msgs []*Message) error
}
