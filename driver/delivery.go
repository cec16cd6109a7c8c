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
