package eventbus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
)

// BenchmarkPublishConsume publishes events on membus and waits until a
// subscriber handled them all: the allocations of both paths, with no
// Observer (the default, which must add none) and with one that does
// nothing.
func BenchmarkPublishConsume(b *testing.B) {
	for _, c := range []struct {
		name string
		obs  eventbus.Observer
	}{{"no observer", nil}, {"no-op observer", nopObserver{}}} {
		b.Run(c.name, func(b *testing.B) {
			bus := eventbus.New(&eventbus.Options{Observer: c.obs})
			if err := bus.Register("mem", membus.New(nil)); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var handled atomic.Int64
			if _, err := bus.SubscribeEvents(ctx, []string{"bench"}, "g", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
				handled.Add(1)
				return nil
			})); err != nil {
				b.Fatal(err)
			}
			if err := bus.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer bus.Close(ctx)
			data := make([]byte, 256)
			b.ReportAllocs()
			n := int64(0)
			for b.Loop() {
				if err := bus.PublishEvent(ctx, &eventbus.Message{Type: "bench", Data: data}); err != nil {
					b.Fatal(err)
				}
				n++
			}
			for handled.Load() < n {
				time.Sleep(time.Millisecond)
			}
		})
	}
}

type nopObserver struct{}

func (nopObserver) Publish(context.Context, eventbus.Operation, []*eventbus.Message) func(error) {
	return func(error) {}
}

func (nopObserver) Handle(ctx context.Context, _ eventbus.Operation, _ []*eventbus.Message) (context.Context, func(error)) {
	return ctx, func(error) {}
}

func (nopObserver) Settled(eventbus.Operation, *eventbus.Message, eventbus.Settlement) {}
