package telemetry_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/telemetry"
)

// BenchmarkMembus publishes and consumes on membus without telemetry, with
// metrics only, and with metrics and tracing at a parent-based ratio
// sampler of 1% (a realistic production setting) and 100% (every span
// sampled), spans exported in batches to a no-op exporter. The bench
// module compares the same configurations on throughput.
func BenchmarkMembus(b *testing.B) {
	type config struct {
		name    string
		metrics bool
		ratio   float64 // tracing sample ratio; 0: no tracing
	}
	for _, c := range []config{
		{"off", false, 0},
		{"metrics", true, 0},
		{"tracing-1%", false, 0.01},
		{"tracing-100%", false, 1},
		{"tracing-1%+metrics", true, 0.01},
		{"tracing+metrics", true, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			var obs eventbus.Observer
			if c.metrics || c.ratio > 0 {
				var opts telemetry.Options
				if c.ratio > 0 {
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
						sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.ratio))))
					defer tp.Shutdown(context.Background())
					opts.TracerProvider = tp
				}
				if c.metrics {
					mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
					defer mp.Shutdown(context.Background())
					opts.MeterProvider = mp
				}
				o, err := telemetry.New(&opts)
				if err != nil {
					b.Fatal(err)
				}
				obs = o
			}
			bus := eventbus.New(&eventbus.Options{Observer: obs})
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
			cpu0 := cpuTime()
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
			// The CPU time of the process (publisher, consumer, exporter,
			// GC) per message: steadier than ns/op on a busy machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
		})
	}
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
