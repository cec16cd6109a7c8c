package middleware

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/marty-msf/eventbus"
)

// RetryOptions configures Retry. The zero value is the documented default.
type RetryOptions struct {
	// MaxAttempts counts the handler calls within one delivery, the first
	// included. Default 3.
	MaxAttempts int
	// InitialBackoff is the wait before the second call. Default 20ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponentially growing wait. Default 1s.
	MaxBackoff time.Duration
	// Retryable reports whether an error is worth another call in place.
	// nil retries every error except those marked eventbus.Permanent and
	// the context's own errors. Permanent errors are never retried.
	Retryable func(error) bool
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Second
	}
	return o
}

// backoff is the wait after the attempt-th call: exponential from
// InitialBackoff, capped at MaxBackoff, with ±25% jitter so that handlers
// failing together do not retry together.
func (o RetryOptions) backoff(attempt int) time.Duration {
	d := o.InitialBackoff
	for i := 1; i < attempt && d < o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.MaxBackoff)
	return d - d/4 + rand.N(d/2+1)
}

// Retry calls the handler again, in process, when it fails: up to
// MaxAttempts calls per delivery, waiting an exponential backoff with jitter
// between them. The last error is returned to the bus, which redelivers or
// dead-letters as its RetryPolicy says (see the package documentation for
// how the two combine). A context ending during a wait returns the
// handler's last error at once. opts may be nil.
func Retry(opts *RetryOptions) eventbus.Middleware {
	var o RetryOptions
	if opts != nil {
		o = *opts
	}
	o = o.withDefaults()
	retryable := o.Retryable
	if retryable == nil {
		retryable = func(err error) bool {
			return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
		}
	}
	return func(next eventbus.Handler) eventbus.Handler {
		return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			for attempt := 1; ; attempt++ {
				err := next.Handle(ctx, m)
				if err == nil || eventbus.IsPermanent(err) || attempt >= o.MaxAttempts || !retryable(err) {
					if err != nil && attempt > 1 {
						return &chainError{msg: fmt.Sprintf("middleware: %d tries: %s", attempt, inner(err)), errs: []error{err}}
					}
					return err
				}
				t := time.NewTimer(o.backoff(attempt))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return err
				}
			}
		})
	}
}
