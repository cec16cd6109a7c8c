// Package middleware holds composable eventbus.Middleware for message
// handlers: correlation, deduplication, circuit breaking, in-process retry,
// rate limiting and timeouts. Panic recovery, redelivery with backoff and
// dead-lettering are the bus's own (eventbus.RetryPolicy) and need no
// middleware.
//
// # Order
//
// Options.Middleware applies its first element outermost. Wrap in this
// order, leaving out what a handler does not need:
//
//	eventbus.Options{Middleware: []eventbus.Middleware{
//		middleware.Correlate(),          // 1. the incoming message in ctx, for Caused
//		dedup.Wrap,                      // 2. drop a (source, id) already handled
//		breaker.Wrap,                    // 3. pause intake while the downstream is down
//		middleware.Retry(nil),           // 4. a few quick tries in process
//		middleware.RateLimit(limiter),   // 5. each try takes a token
//		middleware.Timeout(5*time.Second), // 6. each try has its own deadline
//	}}
//
// Why this order: a duplicate is dropped before it costs a breaker probe, a
// token or a try; the breaker sees one outcome per delivery (after the
// in-process tries), so a flaky call retried successfully does not trip it;
// every try, first or retried, is rate-limited and gets a fresh timeout,
// and waiting for a token does not eat into the timeout.
//
// # Retry in process and the bus's redelivery
//
// The bus redelivers a failed message as RetryPolicy says (MaxAttempts
// deliveries with exponential backoff, then the dead-letter destination).
// Retry adds tries inside one delivery: with Retry's MaxAttempts r and the
// bus's MaxAttempts d a message that always fails runs its handler r×d
// times before it is dead-lettered, and the bus counts d attempts. Use Retry
// for short transient failures (a connection reset, a lock timeout) where
// waiting tens of milliseconds in place is cheaper than a redelivery, and
// keep its total backoff well under the driver's ack wait; leave longer
// waits to the bus, which releases the message meanwhile. An error marked
// eventbus.Permanent is never retried by either.
//
// # Circuit breaker and intake
//
// Breaker (github.com/sony/gobreaker/v2) does not fail messages while open:
// the handler call waits until the breaker lets a probe through, bounded by
// the handler's context. A subscription runs at most its concurrency of
// handlers, so once they all wait it takes no further message from the
// backend; the messages held meanwhile keep their ack deadline because the
// drivers extend it while the process lives, and no delivery attempt is
// spent. When the probe succeeds the breaker closes and intake resumes.
// Closing the bus while the breaker is open waits for the close context;
// the waiting messages are then redelivered.
//
// # Correlation
//
// Correlate puts the incoming message into the handler's context; Caused
// stamps a message the handler publishes with the incoming message's
// correlation id (its id when it has none) and its id as causation id. The
// bus does not read the context when publishing, so call Caused on each
// message published from a handler.
//
// # Concurrency
//
// Every middleware is safe for concurrent use; the stateful ones (Breaker,
// Dedup, a rate.Limiter) may be shared between subscriptions to share their
// state. None starts a goroutine.
package middleware
