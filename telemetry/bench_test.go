package telemetry_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/telemetry"
)

// BenchmarkMembus publishes and consumes on membus without telemetry and
// with tracing (every span sampled, exported to a no-op exporter in
// batches) and metrics. The bench module compares them on throughput.
func BenchmarkMembus(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer tp.Shutdown(context.Background())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		obs  eventbus.Observer
	}{{"off", nil}, {"tracing+metrics", obs}} {
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
			var n int64
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
