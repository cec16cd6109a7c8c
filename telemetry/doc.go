// Package telemetry observes an eventbus.Bus with OpenTelemetry: traces
// and metrics (with a Prometheus exporter), slog records that carry message
// and trace ids, and health reports of the bus's backends and the saga
// store.
//
// # Use
//
//	hists := telemetry.NewHistograms()
//	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
//		sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithProducer(hists))))
//	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp, MeterProvider: mp, Histograms: hists})
//	bus := eventbus.New(&eventbus.Options{Observer: obs})
//	stop, err := obs.Watch(bus) // consumer lag, read at each collection
//
// Without an Observer the bus makes no call and no allocation for
// telemetry; an Observer without providers does nothing but fill the
// causation and correlation ids of the messages handlers publish.
//
// # Traces
//
// Publishing starts a producer span ("send <destination>") and writes its
// W3C trace context into the message's traceparent and tracestate
// attributes — the CloudEvents distributed-tracing extension, so consumers
// on other CloudEvents SDKs continue the trace, and our consumers continue
// theirs. Handling a message starts a consumer span ("process
// <destination>") that is a child of, and linked to, the producer's span;
// a batch handler's span starts a trace of its own with a link to each
// message's producer. A query is a client span ("query <destination>") until
// the reply and its handler a server span ("answer <destination>"). The
// handler's context carries its span, so that whatever the handler starts
// or publishes with that context nests under it. A saga is one trace across
// its participants: give the orchestrator a TracerProvider
// (saga.Options.TracerProvider) and it persists the saga span's context
// with the instance, sends each step's and compensation's command in a span
// under it, and the participants' handling nests under those sends.
//
// # Sampling and cost
//
// Every message makes two spans (producer and consumer), so tracing every
// message costs several microseconds of CPU per message, mostly in the SDK
// (span records, ids, attributes, export) and the garbage it leaves. In
// production, sample with a parent-based ratio sampler, so that consumers
// follow their producer's decision and a trace is whole or absent:
//
//	tp := sdktrace.NewTracerProvider(
//		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))),
//		sdktrace.WithBatcher(exporter))
//
// A span that is not sampled costs little: its attributes and links are
// only built for spans that record, and the span names and operation
// attributes are built once per destination. Samplers therefore see the
// span's name and kind, and its parent, but no attributes or links. The
// messages still carry the trace context (with the sampled flag off).
//
// Metrics cost three histogram measurements per message sent and handled
// (publish duration, handler duration, latency); the counters and the
// in-flight gauge are atomic counts read at collection. Recorded into the
// SDK's histograms, each measurement costs a few hundred nanoseconds (the
// SDK normalizes and looks up the label set every time), with exemplars
// of the sampled spans (the default trace-based exemplar filter). Given
// Options.Histograms, also a producer of the meter provider's readers, the
// Observer aggregates the histograms itself, a few atomic additions per
// measurement, and the readers receive the same histograms, with an
// exemplar per bucket from the sampled spans; NewPrometheus makes a
// provider and Histograms that do so.
// bench/RESULTS.md (Telemetry) has the figures.
//
// # Metrics
//
// See the Metric* constants. Labels are bounded: system, operation,
// destination, consumer group, backend, message type and error type —
// never message ids or data. The counts agree with eventbus.Bus.Stats:
// consumed-minus-failed is Stats.Handled, dead_lettered is
// Stats.DeadLettered, dropped is Stats.Dropped.
//
// # Logs and health
//
// LogHandler adds trace and message ids to slog records logged with a
// handler's context; Options.Logger receives handler failures, dead letters
// and drops with the same ids. Health serves readiness and liveness of each
// backend (driver.Pinger) and of further checks such as SagaStoreCheck.
package telemetry
