package eventbus_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
)

// benchBus is a started bus on membus whose one consumer counts events.
func benchBus(b *testing.B) (*eventbus.Bus, *atomic.Int64) {
	broker := membus.New(nil)
	b.Cleanup(func() { _ = broker.Close(context.Background()) })
	bus := eventbus.New(&eventbus.Options{Source: "bench"})
	if err := bus.Register("mem", broker.Connect()); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	if _, err := bus.SubscribeEvents(context.Background(), []string{"bench.event"}, "bench", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		n.Add(1)
		return nil
	})); err != nil {
		b.Fatal(err)
	}
	if err := bus.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close(context.Background()) })
	return bus, &n
}

// BenchmarkPublishEvent: one confirmed publish per call, 16 goroutines per
// core... as the bench module's rows, on membus.
func BenchmarkPublishEvent(b *testing.B) {
	bus, _ := benchBus(b)
	data := make([]byte, 256)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := bus.PublishEvent(context.Background(), &eventbus.Message{Type: "bench.event", Data: data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPublisher: the same through one shared Publisher, flushed at
// the end.
func BenchmarkPublisher(b *testing.B) {
	bus, _ := benchBus(b)
	p := bus.NewPublisher(nil)
	defer p.Close(context.Background())
	data := make([]byte, 256)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.PublishEvent(context.Background(), &eventbus.Message{Type: "bench.event", Data: data})
		}
	})
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}
