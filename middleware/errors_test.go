package middleware_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/middleware"
)

// Middlewares stacked on one another say "middleware: " once in the error
// they return, and errors.Is still finds every error they name.
func TestStackedErrorsSayThePrefixOnce(t *testing.T) {
	down := errors.New("db down")
	slow := eventbus.HandlerFunc(func(ctx context.Context, _ *eventbus.Message) error {
		<-ctx.Done()
		return down
	})
	failing := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return down })
	open := func() eventbus.Handler {
		br := middleware.NewBreaker(gobreaker.Settings{Timeout: time.Hour, ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 }})
		h := br.Wrap(failing)
		_ = h.Handle(context.Background(), &eventbus.Message{})
		return h
	}
	retry := middleware.Retry(&middleware.RetryOptions{MaxAttempts: 2, InitialBackoff: time.Millisecond})
	for _, c := range []struct {
		name string
		h    eventbus.Handler
		want string
		is   []error
	}{
		{"retry of a failing handler", retry(failing), "middleware: 2 tries: db down", []error{down}},
		{"timeout", middleware.Timeout(5 * time.Millisecond)(slow), "middleware: handler timed out after 5ms: db down", []error{middleware.ErrTimeout, down}},
		{"retry of a timeout", retry(middleware.Timeout(5 * time.Millisecond)(slow)),
			"middleware: 2 tries: handler timed out after 5ms: db down", []error{middleware.ErrTimeout, down}},
		{"open breaker within a timeout", middleware.Timeout(5 * time.Millisecond)(open()),
			"middleware: circuit breaker: open: handler timed out", []error{middleware.ErrTimeout, gobreaker.ErrOpenState}},
		{"retry of an open breaker within a timeout", retry(middleware.Timeout(5 * time.Millisecond)(open())),
			"middleware: 2 tries: circuit breaker: open: handler timed out", []error{middleware.ErrTimeout, gobreaker.ErrOpenState}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.h.Handle(context.Background(), &eventbus.Message{})
			if err == nil || err.Error() != c.want {
				t.Errorf("error %v, want %q", err, c.want)
			}
			if err != nil && strings.Count(err.Error(), "middleware: ") != 1 {
				t.Errorf("%q repeats the prefix", err)
			}
			for _, target := range c.is {
				if !errors.Is(err, target) {
					t.Errorf("%v does not match %v", err, target)
				}
			}
		})
	}
}
