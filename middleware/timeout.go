package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/marty-msf/eventbus"
)

// ErrTimeout matches the error of a handler call that outlived Timeout's
// limit.
var ErrTimeout = errors.New("middleware: handler timed out")

// Timeout gives each handler call a context that ends after d. A call that
// returns an error once its deadline passed fails with an error matching
// ErrTimeout (and the handler's error), which the bus retries like any
// other. The handler must honour ctx: Timeout does not abandon a call that
// ignores it, since the bus's concurrency bound and per-key order rely on
// the call having returned.
func Timeout(d time.Duration) eventbus.Middleware {
	return func(next eventbus.Handler) eventbus.Handler {
		return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			cctx, cancel := context.WithTimeoutCause(ctx, d, ErrTimeout)
			defer cancel()
			err := next.Handle(cctx, m)
			// An error that says it timed out already (a Breaker that
			// waited until the deadline) is returned as it is.
			if err != nil && errors.Is(context.Cause(cctx), ErrTimeout) && ctx.Err() == nil && !errors.Is(err, ErrTimeout) {
				return &chainError{msg: fmt.Sprintf("%v after %v: %s", ErrTimeout, d, inner(err)), errs: []error{ErrTimeout, err}}
			}
			return err
		})
	}
}
