package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// NATS rows: every scenario starts its own embedded nats-server (JetStream
// file storage in a temporary directory) and every subject connects to it
// over loopback TCP, publishers and consumers on connections of their own.
const (
	coreBroker = "NATS core"
	jsBroker   = "JetStream"
	rrBroker   = "NATS request/reply"
	// rrBroker16 is request/reply with queryClients clients at once.
	rrBroker16 = "NATS request/reply, 16 clients"
)

// queryClients is the concurrent clients of the rrBroker16 rows.
const queryClients = 16

func init() {
	register(Scenario{Name: "raw nats.go", Broker: coreBroker, Role: RoleRaw, Run: runCoreRaw})
	register(Scenario{Name: "raw nats.go, CloudEvents headers", Broker: coreBroker, Role: RoleReference, Run: runCoreRawHeaders})
	register(Scenario{Name: "raw nats.go, flush after each publish", Broker: coreBroker, Role: RoleReference, Run: runCoreRawFlushed})
	register(Scenario{Name: "eventbus on natsbus, JetStream off", Broker: coreBroker, Role: RoleBus, Run: runCoreBus})
	register(Scenario{Name: "Watermill NATS, JetStream off", Broker: coreBroker, Role: RolePeer, Run: runCoreWatermill})

	register(Scenario{Name: "raw jetstream, async publish", Broker: jsBroker, Role: RoleRaw, Run: runJetStreamRaw})
	register(Scenario{Name: "raw jetstream, async publish, CloudEvents headers", Broker: jsBroker, Role: RoleReference, Run: runJetStreamRawHeaders})
	register(Scenario{Name: "raw jetstream, async publish, CloudEvents headers, no Nats-Msg-Id", Broker: jsBroker, Role: RoleReference, Run: runJetStreamRawHeadersNoID})
	register(Scenario{Name: "raw jetstream, sync publish", Broker: jsBroker, Role: RoleReference, Run: runJetStreamRawSync})
	register(Scenario{Name: "eventbus on natsbus", Broker: jsBroker, Role: RoleBus, Run: runJetStreamBus})
	register(Scenario{Name: "Watermill NATS JetStream", Broker: jsBroker, Role: RolePeer, Run: runJetStreamWatermill})
	register(Scenario{Name: "eventbus on natsbus, 64× publishers", Broker: jsBroker, Role: RoleReference, Run: runJetStreamBusWide})
	register(Scenario{Name: "eventbus streams on natsbus, batches of 64", Broker: jsBroker, Role: RoleReference, Run: runJetStreamBusStream})
	register(Scenario{Name: "raw jetstream, consume stored backlog", Broker: jsBroker, Role: RoleReference, Run: runJetStreamRawBacklog})
	register(Scenario{Name: "raw jetstream, consume stored backlog, CloudEvents headers", Broker: jsBroker, Role: RoleReference, Run: runJetStreamRawBacklogHeaders})
	register(Scenario{Name: "eventbus on natsbus, consume stored backlog", Broker: jsBroker, Role: RoleReference, Run: runJetStreamBusBacklog})

	register(Scenario{Name: "raw nc.Request", Broker: rrBroker, Role: RoleRaw, Run: requestRows(runRequestRaw, 1)})
	register(Scenario{Name: "eventbus Query on natsbus", Broker: rrBroker, Role: RoleBus, Run: requestRows(runRequestBus, 1)})
	register(Scenario{Name: "raw nc.Request", Broker: rrBroker16, Role: RoleRaw, Run: requestRows(runRequestRaw, queryClients)})
	register(Scenario{Name: "eventbus Query on natsbus", Broker: rrBroker16, Role: RoleBus, Run: requestRows(runRequestBus, queryClients)})

	registerTarget(rowRatioTarget(coreBroker, "at-least-once: eventbus PublishEvent ≥ 0.9× raw flushed after each publish",
		"eventbus on natsbus, JetStream off", "raw nats.go, flush after each publish", Result.PublishRate, 0.9))
	registerTarget(rowRatioTarget(coreBroker, "at-most-once: Publisher consume ≥ 0.8× raw buffered publish", coreAtMostOnce, "raw nats.go",
		Result.ConsumeRate, 0.8))
	registerTarget(rowRatioTarget(jsBroker, "per-call: eventbus PublishEvent ≥ 0.9× raw sync publish", "eventbus on natsbus", "raw jetstream, sync publish",
		Result.PublishRate, 0.9))
	registerTarget(ratioTarget(jsBroker, "live: eventbus consume ≥ 0.9× raw", RoleBus, RoleRaw, Result.ConsumeRate, 0.9))
	// PublishEvent's row consumes only what its per-call publishes bring;
	// the Publisher's, like raw's, publishes faster than its consumer
	// handles, so its consume rate is the consumer's.
	registerTarget(rowRatioTarget(jsBroker, "live: Publisher row's consume ≥ 0.9× raw's (both consumers outpaced by their publishers)",
		jsPipelineRow, "raw jetstream, async publish", Result.ConsumeRate, 0.9))
	registerTarget(rowRatioTarget(jsBroker, "backlog: eventbus consume of a stored backlog ≥ 0.9× raw's",
		"eventbus on natsbus, consume stored backlog", "raw jetstream, consume stored backlog", Result.ConsumeRate, 0.9))
	// The same targets against raw rows doing the bus's work (the
	// CloudEvents headers on every message), reported beside the plain ones.
	registerTarget(rowRatioTarget(coreBroker, "at-most-once: Publisher consume ≥ 0.8× raw buffered publish with the CloudEvents headers",
		coreAtMostOnce, "raw nats.go, CloudEvents headers", Result.ConsumeRate, 0.8))
	registerTarget(rowRatioTarget(jsBroker, "backlog: eventbus consume of a stored backlog ≥ 0.9× raw's, both with the CloudEvents headers",
		"eventbus on natsbus, consume stored backlog", "raw jetstream, consume stored backlog, CloudEvents headers", Result.ConsumeRate, 0.9))
	registerTarget(rowRatioTarget(jsBroker, "Publisher publish ≥ 0.9× raw async publish with the CloudEvents headers",
		jsPipelineRow, "raw jetstream, async publish, CloudEvents headers, no Nats-Msg-Id", Result.PublishRate, 0.9))
	registerTarget(ratioTarget(jsBroker, "eventbus publish ≥ 2× Watermill", RoleBus, RolePeer, Result.PublishRate, 2))
	for _, broker := range []string{rrBroker, rrBroker16} {
		registerTarget(latencyTarget(broker, 50, 1.1))
		registerTarget(latencyTarget(broker, 99, 1.1))
		registerTarget(latencyTarget(broker, 99.9, 1.5))
	}
}

// latencyTarget is met when the bus row's p-th percentile is at most
// atMost times the raw row's.
func latencyTarget(broker string, p, atMost float64) Target {
	name := fmt.Sprintf("p%g", p)
	if p == 99.9 {
		name = "p999"
	}
	return Target{Broker: broker, Goal: fmt.Sprintf("eventbus %s ≤ %.1f× raw", name, atMost), Measure: func(g *group) (string, bool, bool) {
		bus, raw := g.role(RoleBus), g.role(RoleRaw)
		if bus == nil || raw == nil || raw.res.Percentile(p) == 0 {
			return "", false, false
		}
		r := float64(bus.res.Percentile(p)) / float64(raw.res.Percentile(p))
		return fmt.Sprintf("%.2f×", r), r <= atMost, true
	}}
}

// requestRows runs a request/reply scenario with clients clients.
func requestRows(run func(ctx context.Context, cfg Config, clients int) (Result, error), clients int) func(context.Context, Config) (Result, error) {
	return func(ctx context.Context, cfg Config) (Result, error) { return run(ctx, cfg, clients) }
}

// natsEnv is one embedded server and the connections a scenario opened.
type natsEnv struct {
	srv   *natsbus.Server
	conns []*nats.Conn
}

func startNATS(ctx context.Context) (*natsEnv, error) {
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1})
	if err != nil {
		return nil, err
	}
	return &natsEnv{srv: srv}, nil
}

func (e *natsEnv) url() string { return e.srv.ClientURL() }

// connect opens a client connection over TCP, closed by close.
func (e *natsEnv) connect(name string) (*nats.Conn, error) {
	// The default error handler prints every slow-consumer event; the rows
	// count losses themselves.
	nc, err := nats.Connect(e.url(), nats.Name(name), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return nil, err
	}
	e.conns = append(e.conns, nc)
	return nc, nil
}

func (e *natsEnv) close(ctx context.Context) {
	for _, nc := range e.conns {
		nc.Close()
	}
	_ = e.srv.Shutdown(context.WithoutCancel(ctx))
}

// openBus opens a bus with one natsbus backend connected to env, registers
// what subscribe asks for, and starts it.
func (e *natsEnv) openBus(ctx context.Context, jetStream bool, subscribe func(*eventbus.Bus) error) (*eventbus.Bus, error) {
	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{e.url()}, Options: natsbus.Options{JetStream: &jetStream}})
	if err != nil {
		return nil, err
	}
	return startBus(ctx, "nats", d, subscribe)
}

// runCoreRaw: nc.Publish from 16 goroutines on one connection, flushed once
// per publisher at the end; one subscription with unlimited pending buffers.
func runCoreRaw(ctx context.Context, cfg Config) (Result, error) {
	return runCore(ctx, cfg, false, false)
}

// runCoreRawHeaders: as runCoreRaw, each message carrying the CloudEvents
// headers natsbus puts on an event, built the plain way (a nats.Header per
// message): the envelope's cost in the client and the server, without the
// bus.
func runCoreRawHeaders(ctx context.Context, cfg Config) (Result, error) {
	return runCore(ctx, cfg, false, true)
}

// runCoreRawFlushed: as runCoreRaw with a flush after every publish — the
// guarantee natsbus gives on core NATS (written and flushed to the server).
func runCoreRawFlushed(ctx context.Context, cfg Config) (Result, error) {
	return runCore(ctx, cfg, true, false)
}

func runCore(ctx context.Context, cfg Config, flushEach, headers bool) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	pub, err := env.connect("bench-pub")
	if err != nil {
		return Result{}, err
	}
	subc, err := env.connect("bench-sub")
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	tr.lossy = true
	sub, err := subc.QueueSubscribe("bench.core", "bench", func(m *nats.Msg) { tr.handled(m.Data) })
	if err != nil {
		return Result{}, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return Result{}, err
	}
	if err := subc.Flush(); err != nil {
		return Result{}, err
	}
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(id int) (publisher, error) {
		if headers {
			next := rawEnvelopes("bench.core", id, data, false)
			return publisher{
				publish: func(context.Context, int) error { return pub.PublishMsg(next()) },
				confirm: func(ctx context.Context) error { return flush(ctx, pub) },
			}, nil
		}
		if flushEach {
			return publisher{publish: func(ctx context.Context, _ int) error {
				if err := pub.Publish("bench.core", data); err != nil {
					return err
				}
				return flush(ctx, pub)
			}}, nil
		}
		return publisher{
			publish: func(context.Context, int) error { return pub.Publish("bench.core", data) },
			confirm: func(ctx context.Context) error { return flush(ctx, pub) },
		}, nil
	})
}

// runCoreBus: PublishEvent and SubscribeEvents on natsbus with JetStream off
// (events on core NATS, the group a queue group). Each publish is flushed.
func runCoreBus(ctx context.Context, cfg Config) (Result, error) {
	return runNATSBus(ctx, cfg, false)
}

// runJetStreamBus: PublishEvent and a SubscribeEvents handler in group
// "bench" on natsbus with its default JetStream layout.
func runJetStreamBus(ctx context.Context, cfg Config) (Result, error) {
	return runNATSBus(ctx, cfg, true)
}

// runJetStreamBusWide: as runJetStreamBus with 64 times the publishers
// (1024 by default), as many in flight as a raw async publisher keeps with a
// quarter of its window: the bus's publish pipelines only across callers.
func runJetStreamBusWide(ctx context.Context, cfg Config) (Result, error) {
	cfg.Publishers *= 64
	res, err := runNATSBus(ctx, cfg, true)
	res.Note = joinNotes(res.Note, fmt.Sprintf("%d concurrent publishers", cfg.Publishers))
	return res, err
}

// runJetStreamBusStream: PublishStream of 64 messages per call and
// ProcessStream in batches of up to 64, acked once per batch.
func runJetStreamBusStream(ctx context.Context, cfg Config) (Result, error) {
	const batch = 64
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	tr := newTracker(cfg.Size)
	consumer, err := env.openBus(ctx, true, func(b *eventbus.Bus) error {
		return errOnly(b.ProcessStream(context.Background(), "bench", "bench", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
			for _, m := range ms {
				tr.handled(m.Data)
			}
			return nil
		}), &eventbus.BatchOptions{Size: batch, MaxWait: 10 * time.Millisecond}))
	})
	if err != nil {
		return Result{}, fmt.Errorf("consumer bus: %w", err)
	}
	defer consumer.Close(context.WithoutCancel(ctx))
	producer, err := env.openBus(ctx, true, nil)
	if err != nil {
		return Result{}, fmt.Errorf("publisher bus: %w", err)
	}
	defer producer.Close(context.WithoutCancel(ctx))
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		msgs := make([]*eventbus.Message, batch)
		return publisher{batch: batch, publish: func(ctx context.Context, n int) error {
			for i := range n {
				msgs[i] = &eventbus.Message{Type: benchEventType, Data: data}
			}
			return producer.PublishStream(ctx, "bench", msgs[:n]...)
		}}, nil
	})
}

func runNATSBus(ctx context.Context, cfg Config, jetStream bool) (Result, error) {
	return runNATSBusWith(ctx, cfg, jetStream, busThroughput)
}

// runNATSBusWith runs runNATSBus's setup and publishes with publish: the
// events are at least once, the default.
func runNATSBusWith(ctx context.Context, cfg Config, jetStream bool, publish busPublish) (Result, error) {
	return runNATSRouted(ctx, cfg, jetStream, eventbus.AtLeastOnce, publish)
}

// runCoreWatermill: Watermill's NATS Pub/Sub with JetStream disabled. Its
// Publish does not flush; each publisher flushes the connection once at the
// end so that the rate counts what reached the server.
func runCoreWatermill(ctx context.Context, cfg Config) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	pc, err := env.connect("bench-pub")
	if err != nil {
		return Result{}, err
	}
	sc, err := env.connect("bench-sub")
	if err != nil {
		return Result{}, err
	}
	js := wmnats.JetStreamConfig{Disabled: true}
	p, err := wmnats.NewPublisherWithNatsConn(pc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{}, SubjectCalculator: wmnats.DefaultSubjectCalculator, JetStream: js,
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	s, err := wmnats.NewSubscriberWithNatsConn(sc, wmnats.SubscriberSubscriptionConfig{
		QueueGroupPrefix: "bench", SubscribersCount: 1, JetStream: js,
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	tr.lossy = true
	res, err := runWatermill(ctx, cfg, tr, p, s, "bench_core", func(ctx context.Context) error { return flush(ctx, pc) })
	if err == nil {
		res.Note = joinNotes(res.Note, "Watermill's Publish does not flush; each publisher flushes once at the end")
	}
	return res, err
}

// runWatermill subscribes with s, publishes with p from every publisher and
// tears both down.
func runWatermill(ctx context.Context, cfg Config, tr *tracker, p *wmnats.Publisher, s *wmnats.Subscriber, topic string, confirm func(context.Context) error) (Result, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := s.Subscribe(cctx, topic)
	if err != nil {
		return Result{}, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { watermillConsumer(msgs, tr) })
	defer wg.Wait()
	defer s.Close()
	defer cancel()
	newPub := watermillPublisher(p, topic, payload(cfg))
	return throughput(ctx, cfg, tr, func(id int) (publisher, error) {
		pp, err := newPub(id)
		pp.confirm = confirm
		return pp, err
	})
}

const rawStream, rawSubject = "RAW", "raw.bench"

// rawJetStream creates the raw rows' stream (file storage, limits retention,
// as natsbus's) and starts a durable pull consumer that acks every message
// it gets from Messages(), with the same pull heartbeat and expiry as natsbus
// (short, so that a stalled pull recovers in seconds). stop ends the consumer.
func rawJetStream(ctx context.Context, env *natsEnv, tr *tracker) (js jetstream.JetStream, stop func(), err error) {
	js, sjs, err := rawStreams(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	stop, err = rawConsumer(ctx, sjs, tr)
	return js, stop, err
}

// rawStreams connects a publisher and a subscriber and creates the stream.
func rawStreams(ctx context.Context, env *natsEnv) (pub, sub jetstream.JetStream, err error) {
	pc, err := env.connect("bench-pub")
	if err != nil {
		return nil, nil, err
	}
	sc, err := env.connect("bench-sub")
	if err != nil {
		return nil, nil, err
	}
	pub, err = jetstream.New(pc, jetstream.WithPublishAsyncMaxPending(rawAsyncWindow))
	if err != nil {
		return nil, nil, err
	}
	if _, err := pub.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
	}); err != nil {
		return nil, nil, err
	}
	sub, err = jetstream.New(sc)
	return pub, sub, err
}

func rawConsumer(ctx context.Context, sjs jetstream.JetStream, tr *tracker) (stop func(), err error) {
	cons, err := sjs.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
		Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: rawSubject,
	})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(time.Second), jetstream.PullExpiry(10*time.Second))
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					tr.fail(err)
				}
				return
			}
			tr.handled(m.Data())
			if err := m.Ack(); err != nil {
				tr.fail(fmt.Errorf("ack: %w", err))
				return
			}
		}
	})
	return func() { it.Stop(); wg.Wait() }, nil
}

// runJetStreamRawBacklog: the raw consumer alone, on a stream filled first.
func runJetStreamRawBacklog(ctx context.Context, cfg Config) (Result, error) {
	return jetStreamRawBacklog(ctx, cfg, false)
}

// runJetStreamRawBacklogHeaders: as runJetStreamRawBacklog, each stored
// message carrying the CloudEvents headers natsbus puts on an at-least-once
// event: what the envelope costs the server and the client's header
// decoding, without the bus.
func runJetStreamRawBacklogHeaders(ctx context.Context, cfg Config) (Result, error) {
	return jetStreamRawBacklog(ctx, cfg, true)
}

func jetStreamRawBacklog(ctx context.Context, cfg Config, headers bool) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	js, sjs, err := rawStreams(ctx, env)
	if err != nil {
		return Result{}, err
	}
	data := payload(cfg)
	newMsg := func() *nats.Msg { return &nats.Msg{Subject: rawSubject, Data: data} }
	if headers {
		newMsg = rawEnvelopes(rawSubject, 0, data, false)
	}
	fill := func(ctx context.Context, n int) error {
		futures := make([]jetstream.PubAckFuture, 0, 1000)
		for sent := 0; sent < n; sent += len(futures) {
			futures = futures[:0]
			for range min(cap(futures), n-sent) {
				f, err := js.PublishMsgAsync(newMsg())
				if err != nil {
					return err
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				}
			}
		}
		return nil
	}
	return backlog(ctx, cfg, fill, func(ctx context.Context, tr *tracker) (func(), error) {
		return rawConsumer(ctx, sjs, tr)
	})
}

// rawEnvelopes returns a maker of raw messages that carry the headers
// natsbus puts on an event (CloudEvents binary mode, and the
// de-duplication id with msgID), built the plain way.
func rawEnvelopes(subject string, id int, data []byte, msgID bool) func() *nats.Msg {
	next := envelopeMaker(id, data)
	return func() *nats.Msg {
		m := next()
		h := nats.Header{
			"ce-specversion": {"1.0"}, "ce-id": {m.ID}, "ce-source": {m.Source}, "ce-type": {m.Type},
			"ce-time": {m.Time.UTC().Format(time.RFC3339Nano)},
		}
		if msgID {
			h["Nats-Msg-Id"] = []string{m.ID}
		}
		return &nats.Msg{Subject: subject, Data: data, Header: h}
	}
}

// runJetStreamBusBacklog: the bus's consumer alone (SubscribeEvents in
// group "bench", starting with the stored messages) on events stored first
// through the natsbus driver, 1000 per Publish.
func runJetStreamBusBacklog(ctx context.Context, cfg Config) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	data := payload(cfg)
	fill := func(ctx context.Context, n int) error {
		d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{env.url()}})
		if err != nil {
			return err
		}
		defer d.Close(context.WithoutCancel(ctx))
		dest := driver.NewDestination(driver.Event, benchEventType)
		next := envelopeMaker(0, data)
		msgs := make([]*driver.Message, 0, 1000)
		for sent := 0; sent < n; sent += len(msgs) {
			msgs = msgs[:0]
			for range min(cap(msgs), n-sent) {
				msgs = append(msgs, next())
			}
			if err := d.Publish(ctx, dest, msgs); err != nil {
				return err
			}
		}
		return nil
	}
	return backlog(ctx, cfg, fill, func(ctx context.Context, tr *tracker) (func(), error) {
		b, err := env.openBus(ctx, true, func(b *eventbus.Bus) error {
			return errOnly(b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr), eventbus.WithStartFirst()))
		})
		if err != nil {
			return nil, err
		}
		return func() { _ = b.Close(context.WithoutCancel(ctx)) }, nil
	})
}

// rawAsyncWindow is the raw async rows' publishes in flight, over all
// publishers: the client's default bound, and natsbus's PublishWindow.
const rawAsyncWindow = 4096

// runJetStreamRaw: PublishMsgAsync from 16 goroutines, each keeping up to
// 4096/16 futures in flight and waiting for all of them at the end.
func runJetStreamRaw(ctx context.Context, cfg Config) (Result, error) {
	return runJetStreamAsync(ctx, cfg, false, false)
}

// runJetStreamRawHeaders: as runJetStreamRaw, each message carrying the
// headers natsbus puts on an exactly-once event (CloudEvents binary mode
// and a de-duplication id): the cost of the envelope on the wire and in
// the server, without the bus.
func runJetStreamRawHeaders(ctx context.Context, cfg Config) (Result, error) {
	return runJetStreamAsync(ctx, cfg, true, true)
}

// runJetStreamRawHeadersNoID: the same headers without the de-duplication
// id, as natsbus sends an at-least-once event.
func runJetStreamRawHeadersNoID(ctx context.Context, cfg Config) (Result, error) {
	return runJetStreamAsync(ctx, cfg, true, false)
}

func runJetStreamAsync(ctx context.Context, cfg Config, headers, msgID bool) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	tr := newTracker(cfg.Size)
	js, stop, err := rawJetStream(ctx, env, tr)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	data := payload(cfg)
	window := max(1, rawAsyncWindow/cfg.Publishers)
	return throughput(ctx, cfg, tr, func(id int) (publisher, error) {
		newMsg := func() *nats.Msg { return &nats.Msg{Subject: rawSubject, Data: data} }
		if headers {
			newMsg = rawEnvelopes(rawSubject, id, data, msgID)
		}
		futures := make([]jetstream.PubAckFuture, 0, window)
		oldest := 0
		wait := func(ctx context.Context, f jetstream.PubAckFuture) error {
			select {
			case <-f.Ok():
				return nil
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return publisher{
			publish: func(ctx context.Context, _ int) error {
				if len(futures) == window {
					if err := wait(ctx, futures[oldest]); err != nil {
						return err
					}
					futures[oldest] = nil
				}
				f, err := js.PublishMsgAsync(newMsg())
				if err != nil {
					return err
				}
				if len(futures) < window {
					futures = append(futures, f)
				} else {
					futures[oldest] = f
					oldest = (oldest + 1) % window
				}
				return nil
			},
			confirm: func(ctx context.Context) error {
				for _, f := range futures {
					if f != nil {
						if err := wait(ctx, f); err != nil {
							return err
						}
					}
				}
				return nil
			},
		}, nil
	})
}

// runJetStreamRawSync: js.PublishMsg, one message per call and 16 calls in
// flight — the raw client used the way the bus's API is used, one confirmed
// message per call.
func runJetStreamRawSync(ctx context.Context, cfg Config) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	tr := newTracker(cfg.Size)
	js, stop, err := rawJetStream(ctx, env, tr)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		return publisher{publish: func(ctx context.Context, _ int) error {
			_, err := js.PublishMsg(ctx, &nats.Msg{Subject: rawSubject, Data: data})
			return err
		}}, nil
	})
}

// runJetStreamWatermill: watermill-nats's NATS Pub/Sub with JetStream on,
// the package it recommends for production: a synchronous JetStream publish
// per message, a durable queue subscription with asynchronous acks (its
// faster setting; the default waits for each ack).
func runJetStreamWatermill(ctx context.Context, cfg Config) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	pc, err := env.connect("bench-pub")
	if err != nil {
		return Result{}, err
	}
	sc, err := env.connect("bench-sub")
	if err != nil {
		return Result{}, err
	}
	p, err := wmnats.NewPublisherWithNatsConn(pc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{}, SubjectCalculator: wmnats.DefaultSubjectCalculator,
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	s, err := wmnats.NewSubscriberWithNatsConn(sc, wmnats.SubscriberSubscriptionConfig{
		QueueGroupPrefix: "bench", SubscribersCount: 1,
		JetStream: wmnats.JetStreamConfig{AutoProvision: true, DurablePrefix: "bench", AckAsync: true},
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	return runWatermill(ctx, cfg, newTracker(cfg.Size), p, s, "bench_js", nil)
}

// runRequestRaw: nc.Request from clients goroutines sharing one connection,
// a subscription on another connection answering with the request's data.
func runRequestRaw(ctx context.Context, cfg Config, clients int) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	client, err := env.connect("bench-client")
	if err != nil {
		return Result{}, err
	}
	server, err := env.connect("bench-server")
	if err != nil {
		return Result{}, err
	}
	if _, err := server.QueueSubscribe("bench.echo", "bench", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		return Result{}, err
	}
	if err := server.Flush(); err != nil {
		return Result{}, err
	}
	data := payload(cfg)
	return latency(ctx, cfg, clients, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m, err := client.RequestWithContext(rctx, "bench.echo", data)
		if err != nil {
			return err
		}
		if len(m.Data) != len(data) {
			return fmt.Errorf("reply of %d bytes, want %d", len(m.Data), len(data))
		}
		return nil
	})
}

// runRequestBus: bus.Query from clients goroutines sharing one client bus,
// HandleQuery answering at once with the request's data on another bus,
// both over natsbus.
func runRequestBus(ctx context.Context, cfg Config, clients int) (Result, error) {
	env, err := startNATS(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	server, err := env.openBus(ctx, true, func(b *eventbus.Bus) error {
		return errOnly(b.HandleQuery(context.Background(), "bench", "echo", eventbus.QueryHandlerFunc(func(_ context.Context, m *eventbus.Message) (*eventbus.Message, error) {
			return &eventbus.Message{Type: "echo.reply", Data: m.Data}, nil
		})))
	})
	if err != nil {
		return Result{}, fmt.Errorf("server bus: %w", err)
	}
	defer server.Close(context.WithoutCancel(ctx))
	client, err := env.openBus(ctx, true, nil)
	if err != nil {
		return Result{}, fmt.Errorf("client bus: %w", err)
	}
	defer client.Close(context.WithoutCancel(ctx))
	data := payload(cfg)
	return latency(ctx, cfg, clients, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := client.Query(rctx, "bench", &eventbus.Message{Type: "echo", Data: data})
		if err != nil {
			return err
		}
		if len(r.Data) != len(data) {
			return fmt.Errorf("reply of %d bytes, want %d", len(r.Data), len(data))
		}
		return nil
	})
}

// flush waits until the server processed everything nc wrote so far.
func flush(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return nc.FlushWithContext(ctx)
}

func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// errOnly drops the subscription of a subscribe call whose subscription
// lives as long as its bus.
func errOnly(_ *eventbus.Subscription, err error) error { return err }
