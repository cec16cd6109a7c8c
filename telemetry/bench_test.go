package telemetry_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/telemetry"
)

// BenchmarkMembus publishes and consumes on membus without telemetry, with
// metrics only, and with metrics and tracing at a parent-based ratio
// sampler of 1% (a realistic production setting) and 100% (every span
// sampled), spans exported in batches to a no-op exporter. Metrics are
// aggregated by telemetry.Histograms, the reader's producer, but in
// "metrics-sdk", where the histograms are the SDK's. The bench module
// compares the same configurations on throughput.
func BenchmarkMembus(b *testing.B) {
	type config struct {
		name     string
		observer bool // an Observer even without providers
		metrics  bool
		ratio    float64 // tracing sample ratio; 0: no tracing
		sdk      bool    // histograms recorded into the SDK
	}
	for _, c := range []config{
		{"off", false, false, 0, false},
		{"no-providers", true, false, 0, false},
		{"metrics", true, true, 0, false},
		{"metrics-sdk", true, true, 0, true},
		{"tracing-1%", true, false, 0.01, false},
		{"tracing-100%", true, false, 1, false},
		{"tracing-1%+metrics", true, true, 0.01, false},
		{"tracing+metrics", true, true, 1, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			var obs eventbus.Observer
			if c.observer {
				var opts telemetry.Options
				if c.ratio > 0 {
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
						sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.ratio))))
					defer tp.Shutdown(context.Background())
					opts.TracerProvider = tp
				}
				if c.metrics {
					var ropts []sdkmetric.ManualReaderOption
					if !c.sdk {
						opts.Histograms = telemetry.NewHistograms()
						ropts = append(ropts, sdkmetric.WithProducer(opts.Histograms))
					}
					mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader(ropts...)))
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

// BenchmarkSDKFloor is what the OpenTelemetry SDK alone costs per message
// at 100% sampling, configured as in BenchmarkMembus: the two spans the
// Observer makes (a producer span with the trace context written into the
// message, a consumer span continuing it, with a link), with the same
// attributes; no bus. The histograms are not the SDK's there
// (telemetry.Histograms aggregates them); "sdk-histograms" adds the three
// SDK histogram recordings with precomputed attribute sets that the
// Observer makes without Histograms. BenchmarkMembus's tracing+metrics
// minus off minus this is the Observer's own cost.
func BenchmarkSDKFloor(b *testing.B) {
	for _, withHistograms := range []bool{false, true} {
		name := "spans"
		if withHistograms {
			name = "sdk-histograms"
		}
		b.Run(name, func(b *testing.B) { sdkFloor(b, withHistograms) })
	}
}

func sdkFloor(b *testing.B, withHistograms bool) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1))))
	defer tp.Shutdown(context.Background())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tracer := tp.Tracer(telemetry.ScopeName)
	meter := mp.Meter(telemetry.ScopeName)
	var hs [3]metric.Float64Histogram
	for i, name := range []string{telemetry.MetricPublishDuration, telemetry.MetricProcessDuration, telemetry.MetricLatency} {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"))
		if err != nil {
			b.Fatal(err)
		}
		hs[i] = h
	}
	record := func(ctx context.Context, i int, start time.Time, set metric.RecordOption) {
		if withHistograms {
			hs[i].Record(ctx, time.Since(start).Seconds(), set)
		}
	}
	op := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("eventbus.memory"), semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName("events.bench"), attribute.String("eventbus.backend", "mem"),
	}
	send := append(op[:len(op):len(op)], semconv.MessagingOperationTypeSend)
	process := append(op[:len(op):len(op)], semconv.MessagingOperationTypeProcess, semconv.MessagingConsumerGroupName("g"))
	sendSet := metric.WithAttributeSet(attribute.NewSet(append(op[:len(op):len(op)], semconv.CloudEventsEventType("bench"))...))
	processSet := metric.WithAttributeSet(attribute.NewSet(append(process[:len(process):len(process)], semconv.CloudEventsEventType("bench"))...))
	message := func(kvs []attribute.KeyValue) []attribute.KeyValue {
		return append(kvs[:len(kvs):len(kvs)], semconv.MessagingMessageID("0123456789abcdef0123"), semconv.MessagingMessageBodySize(256),
			semconv.CloudEventsEventID("0123456789abcdef0123"), semconv.CloudEventsEventSource("bench"), semconv.CloudEventsEventType("bench"),
			semconv.MessagingMessageConversationID("0123456789abcdef0123"))
	}
	sendAttrs, processAttrs := message(send), message(process)
	prop := propagation.TraceContext{}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		start := time.Now()
		pctx, ps := tracer.Start(ctx, "send events.bench", trace.WithSpanKind(trace.SpanKindProducer))
		ps.SetAttributes(sendAttrs...)
		var carrier headers
		prop.Inject(pctx, &carrier)
		ps.End()
		record(ctx, 0, start, sendSet)

		start = time.Now()
		parent := prop.Extract(ctx, &carrier)
		cctx, cs := tracer.Start(parent, "process events.bench", trace.WithSpanKind(trace.SpanKindConsumer))
		cs.SetAttributes(processAttrs...)
		cs.AddLink(trace.Link{SpanContext: trace.SpanContextFromContext(parent)})
		record(cctx, 2, start, processSet)
		cs.End()
		record(cctx, 1, start, processSet)
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// headers carries a trace context in two strings, as a message does.
type headers struct{ parent, state string }

func (h *headers) Get(key string) string {
	if key == "traceparent" {
		return h.parent
	}
	return h.state
}

func (h *headers) Set(key, value string) {
	if key == "traceparent" {
		h.parent = value
	} else {
		h.state = value
	}
}

func (h *headers) Keys() []string { return []string{"traceparent", "tracestate"} }
