package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/telemetry"
)

// Telemetry rows: the bus rows again with package telemetry observing both
// ends — spans (producer and consumer) sampled by a parent-based ratio
// sampler, at 1% (a production setting) and 100% (every message), exported
// in batches to an exporter that discards them, and every metric recorded
// for an SDK meter provider (the histograms aggregated by
// telemetry.Histograms, the reader's producer). The targets compare them
// with the bus rows of the same run.
const (
	memTelemetryRow  = "eventbus on membus, tracing + metrics"
	jsTelemetryRow   = "eventbus on natsbus, tracing + metrics"
	memTelemetry1Row = "eventbus on membus, tracing 1% + metrics"
	jsTelemetry1Row  = "eventbus on natsbus, tracing 1% + metrics"
)

func init() {
	for _, c := range []struct {
		broker, on, off, what string
		ratio                 float64
		run                   func(context.Context, Config, float64) (Result, error)
	}{
		{memBroker, memTelemetry1Row, "eventbus on membus", "tracing 1%", 0.01, runMembusTelemetry},
		{memBroker, memTelemetryRow, "eventbus on membus", "tracing 100%", 1, runMembusTelemetry},
		{jsBroker, jsTelemetry1Row, "eventbus on natsbus", "tracing 1%", 0.01, runJetStreamTelemetry},
		{jsBroker, jsTelemetryRow, "eventbus on natsbus", "tracing 100%", 1, runJetStreamTelemetry},
	} {
		run, ratio := c.run, c.ratio
		register(Scenario{Name: c.on, Broker: c.broker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return run(ctx, cfg, ratio)
		}})
		registerTarget(telemetryTarget(c.broker, "publish with "+c.what+" + metrics ≥ 0.9× without", c.on, c.off, Result.PublishRate))
		registerTarget(telemetryTarget(c.broker, "consume with "+c.what+" + metrics ≥ 0.9× without", c.on, c.off, Result.ConsumeRate))
	}
}

func telemetryTarget(broker, goal, on, off string, metric func(Result) float64) Target {
	return Target{Broker: broker, Goal: goal, Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(on), g.name(off)
		if a == nil || b == nil || metric(b.res) == 0 {
			return "", false, false
		}
		r := metric(a.res) / metric(b.res)
		return fmt.Sprintf("%.2f×", r), r >= 0.9, true
	}}
}

// discard is a span exporter that counts and drops what it is given.
type discard struct{ n *atomic.Int64 }

func (d discard) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	d.n.Add(int64(len(spans)))
	return nil
}
func (discard) Shutdown(context.Context) error { return nil }

// The batch span processor of the rows: a queue of 16384 spans exported in
// batches of up to 4096 (or every 200ms), never blocking the span's End: a
// span that finds the queue full is dropped, which the row's note counts.
// The SDK's defaults (2048, 512, 5s) drop spans at these rates.
const (
	spanQueue   = 16384
	spanBatch   = 4096
	spanTimeout = 200 * time.Millisecond
)

// newObserver returns an observer with a tracer provider sampling ratio of
// the traces (parent based: a consumer follows its producer's decision) and
// a meter provider whose reader gets the histograms from
// telemetry.Histograms, and the function that shuts both down and returns
// how many spans were exported.
func newObserver(ratio float64) (*telemetry.Observer, func(context.Context) int64, error) {
	var exported atomic.Int64
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(discard{&exported}, sdktrace.WithMaxQueueSize(spanQueue), sdktrace.WithMaxExportBatchSize(spanBatch), sdktrace.WithBatchTimeout(spanTimeout)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	hists := telemetry.NewHistograms()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader(sdkmetric.WithProducer(hists))))
	shutdown := func(ctx context.Context) int64 {
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
		return exported.Load()
	}
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp, MeterProvider: mp, Histograms: hists})
	if err != nil {
		shutdown(context.Background())
		return nil, nil, err
	}
	return obs, shutdown, nil
}

// spansNote says how many spans were exported, against the two per message
// (producer and consumer) that 100% sampling makes.
func spansNote(res Result, exported int64, ratio float64) string {
	if ratio < 1 {
		return fmt.Sprintf("%d spans exported (%.2f%% of 2 per message)", exported, 100*float64(exported)/float64(2*max(res.Messages, 1)))
	}
	return fmt.Sprintf("%d spans exported of %d (2 per message)", exported, 2*res.Messages)
}

func runMembusTelemetry(ctx context.Context, cfg Config, ratio float64) (Result, error) {
	obs, shutdown, err := newObserver(ratio)
	if err != nil {
		return Result{}, err
	}
	exported := int64(-1)
	defer func() {
		if exported < 0 {
			shutdown(context.WithoutCancel(ctx))
		}
	}()
	b := eventbus.New(&eventbus.Options{Source: "bench", Observer: obs})
	defer b.Close(context.WithoutCancel(ctx))
	if err := b.Register("mem", membus.New(nil)); err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	if _, err := b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr)); err != nil {
		return Result{}, err
	}
	if err := b.Start(ctx); err != nil {
		return Result{}, err
	}
	res, err := throughput(ctx, cfg, tr, busPublisher(b, payload(cfg)))
	_ = b.Close(context.WithoutCancel(ctx))
	exported = shutdown(context.WithoutCancel(ctx))
	res.Note = joinNotes(res.Note, spansNote(res, exported, ratio))
	return res, err
}

func runJetStreamTelemetry(ctx context.Context, cfg Config, ratio float64) (Result, error) {
	obs, shutdown, err := newObserver(ratio)
	if err != nil {
		return Result{}, err
	}
	exported := int64(-1)
	defer func() {
		if exported < 0 {
			shutdown(context.WithoutCancel(ctx))
		}
	}()
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	open := func() (*eventbus.Bus, error) {
		jetStream := true
		d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{env.url()}, Options: natsbus.Options{JetStream: &jetStream}})
		if err != nil {
			return nil, err
		}
		b := eventbus.New(&eventbus.Options{Source: "bench", Observer: obs})
		if err := b.Register("nats", d); err != nil {
			_ = d.Close(ctx)
			return nil, err
		}
		return b, nil
	}
	tr := newTracker(cfg.Size)
	consumer, err := open()
	if err != nil {
		return Result{}, err
	}
	defer consumer.Close(context.WithoutCancel(ctx))
	if _, err := consumer.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr)); err != nil {
		return Result{}, err
	}
	if err := consumer.Start(ctx); err != nil {
		return Result{}, err
	}
	producer, err := open()
	if err != nil {
		return Result{}, err
	}
	defer producer.Close(context.WithoutCancel(ctx))
	if err := producer.Start(ctx); err != nil {
		return Result{}, err
	}
	res, err := throughput(ctx, cfg, tr, busPublisher(producer, payload(cfg)))
	_ = producer.Close(context.WithoutCancel(ctx))
	_ = consumer.Close(context.WithoutCancel(ctx))
	exported = shutdown(context.WithoutCancel(ctx))
	res.Note = joinNotes(res.Note, spansNote(res, exported, ratio))
	return res, err
}
