package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// In-memory rows: the same process publishes and consumes; there is no
// broker but the queue between them.
const memBroker = "in-memory"

// memQueue is the buffer every in-memory subject gets between publishers
// and the consumer: membus's default queue bound.
const memQueue = membus.DefaultBufferSize

const benchEventType = "bench.event"

func init() {
	register(Scenario{Name: "Go channel (ceiling)", Broker: memBroker, Role: RoleReference, Run: runGoChannel})
	register(Scenario{Name: "raw membus driver", Broker: memBroker, Role: RoleRaw, Run: runMembusDriver})
	register(Scenario{Name: "eventbus on membus", Broker: memBroker, Role: RoleBus, Run: runMembusBus})
	register(Scenario{Name: "Watermill GoChannel", Broker: memBroker, Role: RolePeer, Run: runWatermillGoChannel})
	registerTarget(ratioTarget(memBroker, "eventbus publish ≥ 2× Watermill", RoleBus, RolePeer, Result.PublishRate, 2))
	registerTarget(ratioTarget(memBroker, "eventbus consume ≥ 2× Watermill", RoleBus, RolePeer, Result.ConsumeRate, 2))
	registerTarget(Target{Broker: memBroker, Goal: "allocs/msg added by the bus (eventbus − raw driver) ≤ 1", Measure: busAllocs(1)})
	registerTarget(Target{Broker: memBroker, Goal: "eventbus publish ≥ 2M msg/s", Measure: func(g *group) (string, bool, bool) {
		bus := g.role(RoleBus)
		if bus == nil {
			return "", false, false
		}
		return si(bus.res.PublishRate()), bus.res.PublishRate() >= 2e6, true
	}})
	registerTarget(rowRatioTarget(memBroker, "eventbus publish ≥ 0.5× a Go channel", "eventbus on membus", "Go channel (ceiling)", Result.PublishRate, 0.5))
}

// busAllocs measures the allocations per message that the bus adds to the
// raw driver's.
func busAllocs(limit float64) func(g *group) (string, bool, bool) {
	return func(g *group) (string, bool, bool) {
		bus, raw := g.role(RoleBus), g.role(RoleRaw)
		if bus == nil || raw == nil {
			return "", false, false
		}
		d := bus.res.AllocsPerMsg() - raw.res.AllocsPerMsg()
		return fmt.Sprintf("%.2f", d), d <= limit, true
	}
}

// runGoChannel: publishers send the payload on one buffered channel, one
// consumer receives. Nothing is copied, nothing is acknowledged.
func runGoChannel(ctx context.Context, cfg Config) (Result, error) {
	ch := make(chan []byte, memQueue)
	tr := newTracker(cfg.Size)
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := range ch {
			tr.handled(p)
		}
	})
	defer wg.Wait()
	defer close(ch)
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		return publisher{publish: func(ctx context.Context, _ int) error {
			select {
			case ch <- data:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}, nil
	})
}

// envelopeMaker returns a maker of publishable driver message with an id made as the
// bus makes its ids (a per-publisher base and a counter), so that the raw
// driver rows pay what any valid envelope costs.
func envelopeMaker(id int, data []byte) func() *driver.Message {
	base := "bench-" + strconv.Itoa(id) + "-"
	var seq uint64
	return func() *driver.Message {
		seq++
		var buf [40]byte
		n := copy(buf[:], base)
		return &driver.Message{
			ID: string(strconv.AppendUint(buf[:n], seq, 36)), Source: "bench", Type: benchEventType,
			Time: time.Now(), Data: data,
		}
	}
}

// runMembusDriver: the driver contract used directly — Publish of one
// message per call, one consumer doing Receive(64) and Ack per batch.
func runMembusDriver(ctx context.Context, cfg Config) (Result, error) {
	d := membus.New(nil)
	defer d.Close(context.WithoutCancel(ctx))
	dest := driver.NewDestination(driver.Event, benchEventType)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "bench"})
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { driverConsumer(cctx, sub, tr) })
	defer wg.Wait()
	defer cancel()
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(id int) (publisher, error) {
		next := envelopeMaker(id, data)
		one := make([]*driver.Message, 1)
		return publisher{publish: func(ctx context.Context, _ int) error {
			one[0] = next()
			return d.Publish(ctx, dest, one)
		}}, nil
	})
}

// driverConsumer receives up to 64 deliveries at a time and acks them
// together, as the bus's consumer does, until ctx ends or sub closes.
func driverConsumer(ctx context.Context, sub driver.Subscription, tr *tracker) {
	for {
		ds, err := sub.Receive(ctx, 64)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
				tr.fail(err)
			}
			return
		}
		for _, dl := range ds {
			tr.handled(dl.Message.Data)
		}
		if err := sub.Ack(ctx, ds); err != nil && ctx.Err() == nil {
			tr.fail(fmt.Errorf("ack: %w", err))
			return
		}
	}
}

// runMembusBus: PublishEvent and a SubscribeEvents handler in group "bench"
// on one bus over membus.
func runMembusBus(ctx context.Context, cfg Config) (Result, error) {
	return runMembusBusWith(ctx, cfg, busThroughput)
}

// runMembusBusWith runs runMembusBus's setup and publishes with publish.
func runMembusBusWith(ctx context.Context, cfg Config, publish busPublish) (Result, error) {
	b := eventbus.New(&eventbus.Options{Source: "bench"})
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
	return publish(ctx, cfg, tr, b)
}

// countingHandler is the handler of every bus consumer row.
func countingHandler(tr *tracker) eventbus.Handler {
	return eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		tr.handled(m.Data)
		return nil
	})
}

// busPublisher publishes a new event per call, as an application would.
func busPublisher(b *eventbus.Bus, data []byte) func(int) (publisher, error) {
	return func(int) (publisher, error) {
		return publisher{publish: func(ctx context.Context, _ int) error {
			return b.PublishEvent(ctx, &eventbus.Message{Type: benchEventType, Data: data})
		}}, nil
	}
}

// runWatermillGoChannel: Watermill's in-memory Pub/Sub, a new message (with
// its UUID) per Publish, one subscriber acking each message from the
// Subscribe channel (no Router, which would only add to Watermill's cost).
func runWatermillGoChannel(ctx context.Context, cfg Config) (Result, error) {
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: memQueue}, watermill.NopLogger{})
	defer ps.Close()
	cctx, cancel := context.WithCancel(ctx)
	msgs, err := ps.Subscribe(cctx, benchEventType)
	if err != nil {
		cancel()
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	var wg sync.WaitGroup
	wg.Go(func() { watermillConsumer(msgs, tr) })
	defer wg.Wait()
	defer cancel()
	return throughput(ctx, cfg, tr, watermillPublisher(ps, benchEventType, payload(cfg)))
}

// watermillConsumer acks every message of a Watermill subscription until
// its channel closes.
func watermillConsumer(msgs <-chan *message.Message, tr *tracker) {
	for m := range msgs {
		tr.handled(m.Payload)
		m.Ack()
	}
}

func watermillPublisher(p message.Publisher, topic string, data []byte) func(int) (publisher, error) {
	return func(int) (publisher, error) {
		return publisher{publish: func(context.Context, int) error {
			return p.Publish(topic, message.NewMessage(watermill.NewUUID(), data))
		}}, nil
	}
}
