package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/middleware"
)

// The middleware in the order they wrap, outermost first.
func Example() {
	ctx := context.Background()
	dedup := middleware.NewDedup(nil)
	breaker := middleware.NewBreaker(gobreaker.Settings{Name: "payments", Timeout: 10 * time.Second})
	bus := eventbus.New(&eventbus.Options{Middleware: []eventbus.Middleware{
		middleware.Correlate(),
		dedup.Wrap,
		breaker.Wrap,
		middleware.Retry(&middleware.RetryOptions{MaxAttempts: 3, InitialBackoff: time.Millisecond}),
		middleware.RateLimit(rate.NewLimiter(1000, 10)),
		middleware.Timeout(5 * time.Second),
	}})
	_ = bus.Register("memory", membus.New(nil))

	tries := 0
	done := make(chan struct{})
	_, _ = bus.SubscribeEvents(ctx, []string{"order.placed"}, "billing",
		eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			tries++
			if tries < 3 {
				return errors.New("database busy")
			}
			fmt.Printf("charged %s after %d tries\n", m.ID, tries)
			close(done)
			return nil
		}))
	_ = bus.Start(ctx)
	defer bus.Close(ctx)

	_ = bus.PublishEvent(ctx, &eventbus.Message{ID: "order-1", Type: "order.placed"})
	<-done
	// Output:
	// charged order-1 after 3 tries
}

// A handler stamps what it publishes with the incoming message's
// correlation and causation ids.
func ExampleCaused() {
	ctx := context.Background()
	bus := eventbus.New(&eventbus.Options{Middleware: []eventbus.Middleware{middleware.Correlate()}})
	_ = bus.Register("memory", membus.New(nil))
	done := make(chan struct{})
	_, _ = bus.SubscribeEvents(ctx, []string{"order.placed"}, "billing",
		eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			return bus.PublishEvent(ctx, middleware.Caused(ctx, &eventbus.Message{ID: "invoice-9", Type: "invoice.created"}))
		}))
	_, _ = bus.SubscribeEvents(ctx, []string{"invoice.created"}, "mail",
		eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			fmt.Println(m.ID, "correlation:", m.CorrelationID, "causation:", m.CausationID)
			close(done)
			return nil
		}))
	_ = bus.Start(ctx)
	defer bus.Close(ctx)

	_ = bus.PublishEvent(ctx, &eventbus.Message{ID: "order-1", Type: "order.placed"})
	<-done
	// Output:
	// invoice-9 correlation: order-1 causation: order-1
}

func ExampleDedup() {
	dedup := middleware.NewDedup(&middleware.DedupOptions{Size: 10000, TTL: time.Hour})
	h := dedup.Wrap(eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		fmt.Println("handled", m.ID)
		return nil
	}))
	for _, id := range []string{"a", "a", "b"} {
		_ = h.Handle(context.Background(), &eventbus.Message{Source: "shop", ID: id})
	}
	// Output:
	// handled a
	// handled b
}
