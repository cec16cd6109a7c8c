package middleware

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/marty-msf/eventbus"
)

// Breaker is a circuit breaker (github.com/sony/gobreaker/v2) that pauses a
// subscription while open instead of failing its messages: Wrap's handler
// waits, bounded by its context, until the breaker lets a call through. One
// Breaker shared by several subscriptions pauses them all; it is safe for
// concurrent use.
type Breaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout time.Duration

	mu        sync.Mutex
	openUntil time.Time     // when the open state turns half-open
	changed   chan struct{} // closed and replaced on every state change or finished call
}

// NewBreaker returns a breaker configured by st, whose fields keep their
// gobreaker meaning and defaults (it opens after more than 5 consecutive
// failures and stays open st.Timeout, default 60s, then lets st.MaxRequests
// probe calls through), with two changes when they are nil: IsSuccessful
// counts an error marked eventbus.Permanent as a success (the message is at
// fault, not the downstream), and IsExcluded ignores context cancellation
// (shutdown). st.OnStateChange is still called.
func NewBreaker(st gobreaker.Settings) *Breaker {
	b := &Breaker{timeout: st.Timeout, changed: make(chan struct{})}
	if b.timeout <= 0 {
		b.timeout = 60 * time.Second
	}
	if st.IsSuccessful == nil {
		st.IsSuccessful = func(err error) bool { return err == nil || eventbus.IsPermanent(err) }
	}
	if st.IsExcluded == nil {
		st.IsExcluded = func(err error) bool { return errors.Is(err, context.Canceled) }
	}
	user := st.OnStateChange
	st.OnStateChange = func(name string, from, to gobreaker.State) {
		b.mu.Lock()
		if to == gobreaker.StateOpen {
			b.openUntil = time.Now().Add(b.timeout)
		}
		b.mu.Unlock()
		b.wake()
		if user != nil {
			user(name, from, to)
		}
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	return b
}

// State returns the breaker's current state.
func (b *Breaker) State() gobreaker.State { return b.cb.State() }

// Counts returns the breaker's counts in its current generation.
func (b *Breaker) Counts() gobreaker.Counts { return b.cb.Counts() }

func (b *Breaker) wake() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Wrap is the Breaker's eventbus.Middleware. Each call waits while the
// breaker is open (or half-open with its probes taken), then runs the
// handler and reports its outcome to the breaker. A context ending during
// the wait fails the call with an error matching gobreaker.ErrOpenState and
// the context's error, and the message is redelivered.
func (b *Breaker) Wrap(next eventbus.Handler) eventbus.Handler {
	return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		for {
			b.mu.Lock()
			changed, until := b.changed, b.openUntil
			b.mu.Unlock()
			done, err := b.cb.Allow()
			if err == nil {
				herr := next.Handle(ctx, m)
				done(herr)
				b.wake()
				return herr
			}
			// Open: wait for the half-open time. Half-open with its probes
			// taken: wait for a probe's outcome (a state change or a
			// finished call wakes the waiters).
			var timer *time.Timer
			var fire <-chan time.Time
			if errors.Is(err, gobreaker.ErrOpenState) {
				timer = time.NewTimer(max(time.Until(until), time.Millisecond))
				fire = timer.C
			}
			select {
			case <-changed:
			case <-fire:
			case <-ctx.Done():
				cause := context.Cause(ctx)
				err = &chainError{msg: fmt.Sprintf("middleware: circuit breaker: %s: %s", strings.TrimPrefix(err.Error(), "circuit breaker is "), inner(cause)), errs: []error{err, cause}}
			}
			if timer != nil {
				timer.Stop()
			}
			if ctx.Err() != nil {
				return err
			}
		}
	})
}
