package middleware

import (
	"context"
	"fmt"

	"golang.org/x/time/rate"

	"github.com/marty-msf/eventbus"
)

// RateLimit makes each handler call wait for a token from l. Share one
// limiter between subscriptions to bound them together. While calls wait,
// the subscription takes no further message beyond its concurrency, as with
// a slow handler. A context ending during the wait fails the call with the
// context's error (the message is redelivered).
func RateLimit(l *rate.Limiter) eventbus.Middleware {
	return func(next eventbus.Handler) eventbus.Handler {
		return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			if err := l.Wait(ctx); err != nil {
				return fmt.Errorf("middleware: rate limit: %w", err)
			}
			return next.Handle(ctx, m)
		})
	}
}
