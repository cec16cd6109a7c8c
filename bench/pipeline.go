package main

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// Pipelined rows: the same brokers and consumers as each broker's
// "eventbus on …" row, the 16 publishers sharing one eventbus.Publisher
// (PublishEvent without waiting, Flush at the end, which waits for every
// confirmation, as the raw async rows wait for theirs).
const (
	memPipelineRow   = "eventbus Publisher on membus (pipelined)"
	jsPipelineRow    = "eventbus Publisher on natsbus (pipelined)"
	kafkaPipelineRow = "eventbus Publisher on kafkabus (pipelined)"
	coreAtMostOnce   = "eventbus Publisher on natsbus, JetStream off, at-most-once route"
	jsAtMostOnce     = "eventbus Publisher on natsbus, at-most-once route"
	jsExactlyOnce    = "eventbus on natsbus, exactly-once route"
	jsPipelineExact  = "eventbus Publisher on natsbus (pipelined), exactly-once route"
)

func init() {
	register(Scenario{Name: memPipelineRow, Broker: memBroker, Role: RoleReference, Run: runMembusPipeline})
	register(Scenario{Name: jsPipelineRow, Broker: jsBroker, Role: RoleReference, Run: runJetStreamPipeline})
	register(Scenario{Name: kafkaPipelineRow, Broker: kafkaBroker, Role: RoleReference, Run: runKafkaPipeline})
	register(Scenario{Name: coreAtMostOnce, Broker: coreBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runNATSRouted(ctx, cfg, false, eventbus.AtMostOnce, pipelinePublishers)
	}})
	register(Scenario{Name: jsAtMostOnce, Broker: jsBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runNATSRouted(ctx, cfg, true, eventbus.AtMostOnce, pipelinePublishers)
	}})
	register(Scenario{Name: jsExactlyOnce, Broker: jsBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runNATSRouted(ctx, cfg, true, eventbus.ExactlyOnce, busThroughput)
	}})
	register(Scenario{Name: jsPipelineExact, Broker: jsBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runNATSRouted(ctx, cfg, true, eventbus.ExactlyOnce, pipelinePublishers)
	}})
	registerTarget(pipelineTarget(coreBroker, coreAtMostOnce, "raw nats.go", 0.8))
	registerTarget(pipelineTarget(memBroker, memPipelineRow, "Go channel (ceiling)", 0.5))
	registerTarget(pipelineTarget(jsBroker, jsPipelineRow, "raw jetstream, async publish", 0.9))
	registerTarget(pipelineTarget(kafkaBroker, kafkaPipelineRow, "raw franz-go, async produce, acks=all", 0.9))
}

// pipelineTarget is met when the pipelined row publishes at least atLeast
// times the raw row's rate.
func pipelineTarget(broker, row, raw string, atLeast float64) Target {
	return Target{Broker: broker, Goal: fmt.Sprintf("Publisher (pipelined) publish ≥ %.1f× %s", atLeast, raw), Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(row), g.name(raw)
		if a == nil || b == nil || b.res.PublishRate() == 0 {
			return "", false, false
		}
		r := a.res.PublishRate() / b.res.PublishRate()
		return fmt.Sprintf("%.2f×", r), r >= atLeast, true
	}}
}

// startBus makes a bus with d registered as backend, lets subscribe (when
// not nil) register its handlers, and starts it. On failure it closes what
// it opened, d included.
func startBus(ctx context.Context, backend string, d driver.Driver, subscribe func(*eventbus.Bus) error) (*eventbus.Bus, error) {
	b := eventbus.New(&eventbus.Options{Source: "bench"})
	if err := b.Register(backend, d); err != nil {
		_ = d.Close(ctx)
		return nil, err
	}
	if subscribe != nil {
		if err := subscribe(b); err != nil {
			_ = b.Close(ctx)
			return nil, err
		}
	}
	if err := b.Start(ctx); err != nil {
		_ = b.Close(ctx)
		return nil, err
	}
	return b, nil
}

// busPublish publishes the standard workload through producer, a started
// bus, while the consumers report to tr.
type busPublish func(ctx context.Context, cfg Config, tr *tracker, producer *eventbus.Bus) (Result, error)

// runBusPair measures the bus on one backend: a consumer bus whose handler
// in group "bench" counts the events, and a producer bus publishing with
// publish, each on a driver of its own from openDriver, registered as
// backend.
func runBusPair(ctx context.Context, cfg Config, backend string, openDriver func() (driver.Driver, error), publish busPublish) (Result, error) {
	open := func(subscribe func(*eventbus.Bus) error) (*eventbus.Bus, error) {
		d, err := openDriver()
		if err != nil {
			return nil, err
		}
		return startBus(ctx, backend, d, subscribe)
	}
	tr := newTracker(cfg.Size)
	consumer, err := open(func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr)))
	})
	if err != nil {
		return Result{}, fmt.Errorf("consumer bus: %w", err)
	}
	defer consumer.Close(context.WithoutCancel(ctx))
	producer, err := open(nil)
	if err != nil {
		return Result{}, fmt.Errorf("publisher bus: %w", err)
	}
	defer producer.Close(context.WithoutCancel(ctx))
	return publish(ctx, cfg, tr, producer)
}

// busThroughput: PublishEvent of a new event per call, as the "eventbus on
// …" rows do.
func busThroughput(ctx context.Context, cfg Config, tr *tracker, producer *eventbus.Bus) (Result, error) {
	return throughput(ctx, cfg, tr, busPublisher(producer, payload(cfg)))
}

// pipelinePublishers shares one Publisher on b among the publishers; each
// confirms by flushing it.
func pipelinePublishers(ctx context.Context, cfg Config, tr *tracker, b *eventbus.Bus) (Result, error) {
	p := b.NewPublisher(nil)
	defer p.Close(context.WithoutCancel(ctx))
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		return publisher{
			publish: func(ctx context.Context, _ int) error {
				// Failures surface in Flush, which reports every one.
				p.PublishEvent(ctx, &eventbus.Message{Type: benchEventType, Data: data})
				return nil
			},
			confirm: p.Flush,
		}, nil
	})
}

func runMembusPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runMembusBusWith(ctx, cfg, pipelinePublishers)
}

func runJetStreamPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runNATSBusWith(ctx, cfg, true, pipelinePublishers)
}

func runKafkaPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaBusWith(ctx, cfg, pipelinePublishers)
}

// runNATSRouted: the "eventbus on natsbus" rows with the producer's events
// routed with delivery, publishing with publish. At-most-once: natsbus
// publishes without flushing (core) or waiting for the stream's
// acknowledgement (JetStream), and Flush reports the messages written, not
// stored. Exactly-once: every message carries its de-duplication id
// (Nats-Msg-Id), which the server looks up and records.
func runNATSRouted(ctx context.Context, cfg Config, jetStream bool, delivery eventbus.DeliveryGuarantee, publish busPublish) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	tr := newTracker(cfg.Size)
	tr.lossy = !jetStream || delivery == eventbus.AtMostOnce
	consumer, err := env.openBus(ctx, jetStream, func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr)))
	})
	if err != nil {
		return Result{}, fmt.Errorf("consumer bus: %w", err)
	}
	defer consumer.Close(context.WithoutCancel(ctx))
	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{env.url()}, Options: natsbus.Options{JetStream: &jetStream}})
	if err != nil {
		return Result{}, err
	}
	producer := eventbus.New(&eventbus.Options{Source: "bench", Routes: []eventbus.Route{
		{Pattern: eventbus.EventPattern, Backend: "nats", Delivery: delivery},
	}})
	defer producer.Close(context.WithoutCancel(ctx))
	if err := producer.Register("nats", d); err != nil {
		_ = d.Close(ctx)
		return Result{}, err
	}
	if err := producer.Start(ctx); err != nil {
		return Result{}, err
	}
	return publish(ctx, cfg, tr, producer)
}
