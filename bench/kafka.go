package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	metrics "github.com/rcrowley/go-metrics"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/kafkabus"
)

// Kafka rows: every scenario starts its own in-process kfake broker (one
// broker, topics of 4 partitions, data in memory) and talks to it over
// loopback TCP, publishers and consumers on clients of their own. kfake is
// in-memory, so CPU µs/msg and allocs/msg are the figures that carry over to
// a real broker; the rates mostly measure the clients.
const kafkaBroker = "Kafka on kfake"

const kafkaTopic, kafkaPartitions = "bench.kafka", 4

func init() {
	// sarama records client metrics through go-metrics, whose meters start a
	// goroutine that never ends; nothing here reads them.
	metrics.UseNilMetrics = true
	register(Scenario{Name: "raw franz-go, async produce, acks=all", Broker: kafkaBroker, Role: RoleRaw, Run: runKafkaRaw})
	register(Scenario{Name: kafkaRawHeaders, Broker: kafkaBroker, Role: RoleReference, Run: runKafkaRawHeaders})
	register(Scenario{Name: kafkaRawLikeBus, Broker: kafkaBroker, Role: RoleReference, Run: runKafkaRawLikeBus})
	register(Scenario{Name: "raw franz-go, one produce awaited per call", Broker: kafkaBroker, Role: RoleReference, Run: runKafkaRawSync})
	register(Scenario{Name: kafkaRawSyncLikeBus, Broker: kafkaBroker, Role: RoleReference, Run: runKafkaRawSyncLikeBus})
	register(Scenario{Name: "eventbus on kafkabus", Broker: kafkaBroker, Role: RoleBus, Run: runKafkaBus})
	register(Scenario{Name: "Watermill Kafka (sarama)", Broker: kafkaBroker, Role: RolePeer, Run: runKafkaWatermill})
	register(Scenario{Name: "eventbus on kafkabus, 64× publishers", Broker: kafkaBroker, Role: RoleReference, Run: runKafkaBusWide})

	registerTarget(ratioTarget(kafkaBroker, "eventbus publish ≥ 0.9× raw", RoleBus, RoleRaw, Result.PublishRate, 0.9))
	registerTarget(ratioTarget(kafkaBroker, "eventbus publish ≥ 3× Watermill", RoleBus, RolePeer, Result.PublishRate, 3))
	registerTarget(ratioTarget(kafkaBroker, "eventbus consume ≥ 3× Watermill", RoleBus, RolePeer, Result.ConsumeRate, 3))
	registerTarget(ratioOfRows(kafkaBroker, "eventbus publish / raw with one awaited produce per call (same guarantee per call)",
		"eventbus on kafkabus", "raw franz-go, one produce awaited per call", Result.PublishRate))
	registerTarget(ratioOfRows(kafkaBroker, "eventbus publish / raw with one awaited produce per call doing the bus's work",
		"eventbus on kafkabus", kafkaRawSyncLikeBus, Result.PublishRate))
	registerTarget(ratioOfRows(kafkaBroker, "Publisher (pipelined) publish / raw async produce with the same CloudEvents headers",
		kafkaPipelineRow, kafkaRawHeaders, Result.PublishRate))
	registerTarget(ratioOfRows(kafkaBroker, "Publisher (pipelined) consume / raw async produce with the same CloudEvents headers",
		kafkaPipelineRow, kafkaRawHeaders, Result.ConsumeRate))
	registerTarget(ratioOfRows(kafkaBroker, "Publisher (pipelined) publish / raw doing the bus's work (headers, no compression, commit per poll)",
		kafkaPipelineRow, kafkaRawLikeBus, Result.PublishRate))
	registerTarget(ratioOfRows(kafkaBroker, "Publisher (pipelined) consume / raw doing the bus's work (headers, no compression, commit per poll)",
		kafkaPipelineRow, kafkaRawLikeBus, Result.ConsumeRate))
}

// kafkaRawHeaders is the raw async row with the records the bus writes: a
// new id and time per record in the CloudEvents binding's ce_ headers.
const kafkaRawHeaders = "raw franz-go, async produce, CloudEvents headers"

// kafkaRawLikeBus is the raw row that does the work the bus does with its
// defaults: the CloudEvents headers, no compression (franz-go compresses
// with snappy by default, kafkabus does not), at most 10,000 buffered
// records (kafkabus's MaxBufferedRecords), and a consumer that commits what
// it handled after every poll, one commit at a time, as kafkabus commits
// after its handlers (the other raw rows commit every 5 s).
const kafkaRawLikeBus = "raw franz-go, CloudEvents headers, no compression, commit after each poll"

// kafkaRawSyncLikeBus is kafkaRawLikeBus with each produce awaited: the
// work of the bus's PublishEvent.
const kafkaRawSyncLikeBus = "raw franz-go, one produce awaited per call, CloudEvents headers, no compression, commit after each poll"

func startKfake() (*kfake.Cluster, error) {
	return kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(kafkaPartitions),
		kfake.SeedTopics(kafkaPartitions, kafkaTopic))
}

// runKafkaRaw: kgo Produce with a promise from 16 goroutines on one client
// (acks=all, idempotent: franz-go's defaults), each publisher flushing once
// at the end; one group consumer polling with PollFetches and committing
// marks.
func runKafkaRaw(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaRawProduce(ctx, cfg, rawKafka{})
}

// runKafkaRawHeaders: as runKafkaRaw, each record with the CloudEvents
// headers that kafkabus writes for a PublishEvent.
func runKafkaRawHeaders(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaRawProduce(ctx, cfg, rawKafka{headers: true})
}

// runKafkaRawLikeBus: as runKafkaRawHeaders with the bus's settings and
// commits; see kafkaRawLikeBus.
func runKafkaRawLikeBus(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaRawProduce(ctx, cfg, rawKafka{headers: true, likeBus: true})
}

// runKafkaRawSync: as runKafkaRaw, each publish waiting for its own record's
// acknowledgement — the guarantee of one Publish of the bus.
func runKafkaRawSync(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaRawProduce(ctx, cfg, rawKafka{sync: true})
}

// runKafkaRawSyncLikeBus: as runKafkaRawSync with the records, settings and
// commits of kafkaRawLikeBus.
func runKafkaRawSyncLikeBus(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaRawProduce(ctx, cfg, rawKafka{sync: true, headers: true, likeBus: true})
}

// rawKafka says what a raw row does: wait for each record (sync), write the
// CloudEvents headers, use the bus's producer settings and commits
// (likeBus).
type rawKafka struct{ sync, headers, likeBus bool }

func runKafkaRawProduce(ctx context.Context, cfg Config, how rawKafka) (Result, error) {
	c, err := startKfake()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	tr := newTracker(cfg.Size)
	stop, err := rawKafkaConsumer(c.ListenAddrs(), tr, how.likeBus)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0)}
	if how.likeBus {
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxBufferedRecords(10_000))
	}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		return Result{}, err
	}
	defer prod.Close()
	data := payload(cfg)
	return throughput(ctx, cfg, tr, func(id int) (publisher, error) {
		newRecord := func() *kgo.Record { return &kgo.Record{Topic: kafkaTopic, Value: data} }
		if how.headers {
			next := envelopeMaker(id, data)
			newRecord = func() *kgo.Record {
				m := next()
				return &kgo.Record{Topic: kafkaTopic, Value: data, Headers: []kgo.RecordHeader{
					{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte(m.ID)},
					{Key: "ce_source", Value: []byte(m.Source)}, {Key: "ce_type", Value: []byte(m.Type)},
					{Key: "ce_time", Value: m.Time.UTC().AppendFormat(nil, time.RFC3339Nano)},
				}}
			}
		}
		if how.sync {
			return publisher{publish: func(ctx context.Context, _ int) error {
				return prod.ProduceSync(ctx, newRecord()).FirstErr()
			}}, nil
		}
		var failed atomic.Pointer[error]
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		}
		return publisher{
			publish: func(ctx context.Context, _ int) error {
				prod.Produce(ctx, newRecord(), promise)
				if p := failed.Load(); p != nil {
					return *p
				}
				return nil
			},
			confirm: func(ctx context.Context) error {
				if err := prod.Flush(ctx); err != nil {
					return err
				}
				if p := failed.Load(); p != nil {
					return *p
				}
				return nil
			},
		}, nil
	})
}

// rawKafkaConsumer starts a group member that counts every record and
// marks what it handled for commit: the client's autocommit commits the
// marks every 5 s, and with commitEach a goroutine commits them after every
// poll, one commit at a time, the polls that end during a commit going into
// the next one.
func rawKafkaConsumer(brokers []string, tr *tracker, commitEach bool) (stop func(), err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("bench"), kgo.ConsumeTopics(kafkaTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond), kgo.AutoCommitMarks())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	kick := make(chan struct{}, 1)
	wg.Go(func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) { tr.handled(r.Value) })
			cl.MarkCommitRecords(fs.Records()...)
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	})
	if commitEach {
		wg.Go(func() {
			for {
				select {
				case <-kick:
				case <-ctx.Done():
					return
				}
				// A failed commit is carried by the next one.
				_ = cl.CommitMarkedOffsets(ctx)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
		cl.Close()
	}, nil
}

// runKafkaBus: PublishEvent on one bus and a SubscribeEvents handler in
// group "bench" on another, each with its own kafkabus driver (acks=all,
// idempotent producer, the defaults).
func runKafkaBus(ctx context.Context, cfg Config) (Result, error) {
	return runKafkaBusWith(ctx, cfg, busThroughput)
}

// runKafkaBusWith runs runKafkaBus's setup and publishes with publish.
func runKafkaBusWith(ctx context.Context, cfg Config, publish busPublish) (Result, error) {
	c, err := startKfake()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return runBusPair(ctx, cfg, "kafka", func() (driver.Driver, error) {
		return kafkabus.Open(ctx, &kafkabus.Config{Brokers: c.ListenAddrs(), Options: kafkabus.Options{
			Partitions: kafkaPartitions, FetchMaxWait: 200 * time.Millisecond,
		}})
	}, publish)
}

// runKafkaBusWide: as runKafkaBus with 64 times the publishers (1024 by
// default): each Publish waits for its own acknowledgement, so the bus
// pipelines only across callers, and a raw async producer keeps far more
// records in flight than 16 callers can.
func runKafkaBusWide(ctx context.Context, cfg Config) (Result, error) {
	cfg.Publishers *= 64
	return runKafkaBus(ctx, cfg)
}

// runKafkaWatermill: Watermill's Kafka Pub/Sub (sarama): its publisher is a
// sync producer (acks=all here, as the other rows), its subscriber a
// consumer group from the oldest offset.
func runKafkaWatermill(ctx context.Context, cfg Config) (Result, error) {
	c, err := startKfake()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	pcfg := wmkafka.DefaultSaramaSyncPublisherConfig()
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	p, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers: c.ListenAddrs(), Marshaler: wmkafka.DefaultMarshaler{}, OverwriteSaramaConfig: pcfg,
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	defer p.Close()
	scfg := wmkafka.DefaultSaramaSubscriberConfig()
	scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	s, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers: c.ListenAddrs(), Unmarshaler: wmkafka.DefaultMarshaler{}, ConsumerGroup: "bench",
		OverwriteSaramaConfig: scfg,
	}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := s.Subscribe(cctx, kafkaTopic)
	if err != nil {
		_ = s.Close()
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	var wg sync.WaitGroup
	wg.Go(func() { watermillConsumer(msgs, tr) })
	defer wg.Wait()
	defer s.Close()
	defer cancel()
	return throughput(ctx, cfg, tr, watermillPublisher(p, kafkaTopic, payload(cfg)))
}
