package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// RabbitMQ rows: every scenario uses the broker at AMQP_URL
// (amqp://guest:guest@127.0.0.1:5672/ by default, which scripts/services.sh
// starts), with exchanges and queues of its own that it deletes afterwards.
// Every row publishes persistent messages with publisher confirms to one
// durable classic queue and consumes them with manual acks.
const rabbitBroker = "RabbitMQ"

// rabbitWindow is the raw row's confirmations in flight per publisher.
const rabbitWindow = 64

func init() {
	reg := func(name string, role Role, run func(context.Context, Config) (Result, error)) {
		register(Scenario{Name: name, Broker: rabbitBroker, Role: role, Run: withBrokerCPU(run)})
	}
	reg(rabbitRawRow, RoleRaw, runRabbitRaw)
	reg(rabbitPipelineRow, RoleBus, runRabbitPipeline)
	reg("Watermill AMQP, confirmed", RolePeer, runRabbitWatermill)
	reg(rabbitRawSyncRow, RoleReference, runRabbitRawSync)
	reg(rabbitRawEventRow, RoleReference, runRabbitRawEvents)
	// What each part of the bus's wire format costs the broker, alone.
	reg("raw amqp091-go, async confirms, through a topic exchange", RoleReference, func(ctx context.Context, cfg Config) (Result, error) {
		return rabbitRaw(ctx, cfg, rawShape{window: rabbitWindow, exchange: "topic"})
	})
	reg("raw amqp091-go, async confirms, CloudEvents headers", RoleReference, func(ctx context.Context, cfg Config) (Result, error) {
		return rabbitRaw(ctx, cfg, rawShape{window: rabbitWindow, headers: true})
	})
	reg("raw amqp091-go, async confirms, CloudEvents headers through a direct exchange", RoleReference, func(ctx context.Context, cfg Config) (Result, error) {
		return rabbitRaw(ctx, cfg, rawShape{window: rabbitWindow, exchange: "direct", headers: true})
	})
	reg(rabbitBusRow, RoleReference, runRabbitBus)
	reg("eventbus on rabbitbus, 64× publishers", RoleReference, runRabbitBusWide)

	// The Publisher keeps many confirmations in flight, as the raw async
	// row does; PublishEvent waits for each, as the raw row with one
	// confirmation per call does.
	registerTarget(ratioTarget(rabbitBroker, "Publisher publish ≥ 0.9× raw async confirms", RoleBus, RoleRaw, Result.PublishRate, 0.9))
	registerTarget(ratioTarget(rabbitBroker, "Publisher consume ≥ 0.9× raw", RoleBus, RoleRaw, Result.ConsumeRate, 0.9))
	registerTarget(ratioTarget(rabbitBroker, "Publisher publish ≥ 3× Watermill", RoleBus, RolePeer, Result.PublishRate, 3))
	registerTarget(ratioTarget(rabbitBroker, "Publisher consume ≥ 3× Watermill", RoleBus, RolePeer, Result.ConsumeRate, 3))
	registerTarget(namedRatioTarget(rabbitBroker, "PublishEvent publish ≥ 0.9× raw, one confirmation per call", rabbitBusRow, rabbitRawSyncRow, Result.PublishRate, 0.9))
	// Not an issue target: what the bus's wire format (topic exchange,
	// CloudEvents headers) leaves of the raw ratio.
	registerTarget(namedRatioTarget(rabbitBroker, "Publisher publish ≥ 0.9× raw async with the same headers and exchange", rabbitPipelineRow, rabbitRawEventRow, Result.PublishRate, 0.9))
	registerTarget(namedRatioTarget(rabbitBroker, "Publisher consume ≥ 0.9× raw async with the same headers and exchange", rabbitPipelineRow, rabbitRawEventRow, Result.ConsumeRate, 0.9))
}

const (
	rabbitRawRow      = "raw amqp091-go, async confirms"
	rabbitRawSyncRow  = "raw amqp091-go, one confirmed publish per call"
	rabbitRawEventRow = "raw amqp091-go, async confirms, CloudEvents headers through a topic exchange"
	rabbitBusRow      = "eventbus on rabbitbus (PublishEvent)"
	rabbitPipelineRow = "eventbus Publisher on rabbitbus (pipelined)"
)

// namedRatioTarget is met when row's metric is at least atLeast times
// over's.
func namedRatioTarget(broker, goal, row, over string, metric func(Result) float64, atLeast float64) Target {
	return Target{Broker: broker, Goal: goal, Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(row), g.name(over)
		if a == nil || b == nil || metric(b.res) == 0 {
			return "", false, false
		}
		r := metric(a.res) / metric(b.res)
		return fmt.Sprintf("%.2f×", r), r >= atLeast, true
	}}
}

func rabbitURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return rabbitbus.DefaultURL
}

func rabbitName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bench-" + hex.EncodeToString(b[:])
}

// runRabbitRaw: one connection per side; each publisher has a channel of
// its own in confirm mode and keeps up to rabbitWindow deferred
// confirmations in flight; one consumer with a prefetch of 256 acks each
// message.
func runRabbitRaw(ctx context.Context, cfg Config) (Result, error) {
	return rabbitRaw(ctx, cfg, rawShape{window: rabbitWindow})
}

// runRabbitRawEvents: the raw async row carrying what the bus's messages
// carry: a topic exchange bound to the queue by event type, and the
// CloudEvents binary-mode headers (specversion, id, source, type, time)
// with a new id and time per message. It tells the broker's cost of the
// wire format from the driver's.
func runRabbitRawEvents(ctx context.Context, cfg Config) (Result, error) {
	return rabbitRaw(ctx, cfg, rawShape{window: rabbitWindow, exchange: "topic", headers: true})
}

// runRabbitRawSync: the raw row with one confirmation in flight per
// publisher — the raw client used the way PublishEvent is (each call
// returns once the broker confirmed).
func runRabbitRawSync(ctx context.Context, cfg Config) (Result, error) {
	return rabbitRaw(ctx, cfg, rawShape{window: 1})
}

// rawShape is what a raw row publishes: window confirmations in flight per
// publisher; through the default exchange straight to the queue, or
// through an exchange of that kind bound to the queue by the event type;
// with or without the CloudEvents binary-mode headers.
type rawShape struct {
	window   int
	exchange string // "", "topic" or "direct"
	headers  bool
}

func rabbitRaw(ctx context.Context, cfg Config, shape rawShape) (Result, error) {
	window := shape.window
	name := rabbitName()
	pc, err := amqp.Dial(rabbitURL())
	if err != nil {
		return Result{}, err
	}
	defer pc.Close()
	sc, err := amqp.Dial(rabbitURL())
	if err != nil {
		return Result{}, err
	}
	defer sc.Close()
	sch, err := sc.Channel()
	if err != nil {
		return Result{}, err
	}
	if _, err := sch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
		return Result{}, err
	}
	defer func() { _, _ = sch.QueueDelete(name, false, false, false) }()
	exchange, key := "", name
	if shape.exchange != "" {
		exchange, key = name, benchEventType
		if err := sch.ExchangeDeclare(exchange, shape.exchange, true, false, false, false, nil); err != nil {
			return Result{}, err
		}
		defer func() { _ = sch.ExchangeDelete(exchange, false, false) }()
		if err := sch.QueueBind(name, key, exchange, false, nil); err != nil {
			return Result{}, err
		}
	}
	if err := sch.Qos(256, 0, false); err != nil {
		return Result{}, err
	}
	dl, err := sch.Consume(name, "", false, false, false, false, nil)
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	var wg sync.WaitGroup
	wg.Go(func() {
		for d := range dl {
			tr.handled(d.Body)
			_ = d.Ack(false)
		}
	})
	defer wg.Wait()
	defer func() { _ = sch.Cancel("", false); _ = sch.Close() }()
	data := payload(cfg)
	var seq atomic.Uint64
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		ch, err := pc.Channel()
		if err != nil {
			return publisher{}, err
		}
		if err := ch.Confirm(false); err != nil {
			return publisher{}, err
		}
		var inflight []*amqp.DeferredConfirmation
		wait := func(ctx context.Context, c *amqp.DeferredConfirmation) error {
			ok, err := c.WaitContext(ctx)
			if err == nil && !ok {
				err = fmt.Errorf("nack")
			}
			return err
		}
		return publisher{
			publish: func(ctx context.Context, _ int) error {
				if len(inflight) == window {
					if err := wait(ctx, inflight[0]); err != nil {
						return err
					}
					inflight = inflight[1:]
				}
				p := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: data}
				if shape.headers {
					p.MessageId = strconv.FormatUint(seq.Add(1), 36)
					p.Headers = amqp.Table{
						"cloudEvents:specversion": "1.0", "cloudEvents:id": p.MessageId,
						"cloudEvents:source": "bench", "cloudEvents:type": benchEventType,
						"cloudEvents:time": time.Now().UTC().Format(time.RFC3339Nano),
					}
				}
				c, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
				if err != nil {
					return err
				}
				inflight = append(inflight, c)
				return nil
			},
			confirm: func(ctx context.Context) error {
				for _, c := range inflight {
					if err := wait(ctx, c); err != nil {
						return err
					}
				}
				inflight = nil
				return nil
			},
		}, nil
	})
}

// runRabbitBus: PublishEvent from every publisher on one bus (its driver's
// shared confirm channels, as many as by default), a durable group on
// another bus and connection, the driver's default prefetch.
func runRabbitBus(ctx context.Context, cfg Config) (Result, error) {
	return runRabbitBusWith(ctx, cfg, busThroughput)
}

// runRabbitPipeline: the bus row with the publishers sharing one
// eventbus.Publisher.
func runRabbitPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runRabbitBusWith(ctx, cfg, pipelinePublishers)
}

func runRabbitBusWith(ctx context.Context, cfg Config, publish busPublish) (Result, error) {
	prefix := rabbitName()
	defer rabbitCleanup(prefix)
	return runBusPair(ctx, cfg, "rabbit", func() (driver.Driver, error) {
		return rabbitbus.Open(ctx, &rabbitbus.Config{URL: rabbitURL(), Options: rabbitbus.Options{Prefix: prefix}})
	}, publish)
}

// runRabbitBusWide: the bus row with 64 times the publishers. Each
// PublishEvent waits for its own confirmation, so what is in flight is the
// number of callers; this row shows how far the driver pipelines across them.
func runRabbitBusWide(ctx context.Context, cfg Config) (Result, error) {
	cfg.Publishers *= 64
	res, err := runRabbitBus(ctx, cfg)
	res.Note = joinNotes(res.Note, fmt.Sprintf("%d concurrent publishers", cfg.Publishers))
	return res, err
}

// rabbitCleanup deletes what runRabbitBus declared.
func rabbitCleanup(prefix string) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	_, _ = ch.QueueDelete(prefix+".events."+benchEventType+".bench", false, false, false)
	for _, x := range []string{"events", "commands", "queries", "streams", "broadcast", "replies", "deadletter", "wait", "requeue"} {
		_ = ch.ExchangeDelete(prefix+"."+x, false, false)
	}
}

// runRabbitWatermill: Watermill's AMQP durable Pub/Sub with
// Publish.ConfirmDelivery (each Publish waits for its confirmation, the
// guarantee the other rows give), its default channel pool, one subscriber.
func runRabbitWatermill(ctx context.Context, cfg Config) (Result, error) {
	topic := rabbitName()
	c := wmamqp.NewDurablePubSubConfig(rabbitURL(), wmamqp.GenerateQueueNameTopicNameWithSuffix("bench"))
	c.Publish.ConfirmDelivery = true
	c.Publish.ChannelPoolSize = cfg.Publishers
	p, err := wmamqp.NewPublisher(c, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	defer p.Close()
	s, err := wmamqp.NewSubscriber(c, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := s.Subscribe(cctx, topic)
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	var wg sync.WaitGroup
	wg.Go(func() { watermillConsumer(msgs, tr) })
	defer func() {
		cancel()
		_ = s.Close()
		wg.Wait()
		if conn, err := amqp.Dial(rabbitURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(topic+"_bench", false, false, false)
				_ = ch.ExchangeDelete(topic, false, false)
			}
			_ = conn.Close()
		}
	}()
	return throughput(ctx, cfg, tr, watermillPublisher(p, topic, payload(cfg)))
}
