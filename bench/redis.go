package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/redisbus"
)

// Redis rows: every scenario uses the Redis server at REDIS_URL
// (redis://127.0.0.1:6379/0 by default, which scripts/services.sh starts),
// under keys of its own that it deletes afterwards. Publishers and consumers
// have connections of their own.
const redisBroker = "Redis Streams"

// redisMaxLen is the approximate MAXLEN of every row's XADD: redisbus's
// default, so that the raw row does the same work.
const redisMaxLen = 1_000_000

// Rows compared by the targets. The pipelined Publisher is the bus's
// counterpart of the raw pipelined row (both keep many XADDs in flight per
// caller); PublishEvent, which returns once its own message is stored, is
// compared with one XADD awaited per call.
const (
	redisRawRow      = "raw go-redis, pipelined XADD, XREADGROUP + batch XACK"
	redisRawSyncRow  = "raw go-redis, one XADD awaited per call"
	redisRawCERow    = "raw go-redis, pipelined XADD of the bus's CloudEvents fields"
	redisBusRow      = "eventbus on redisbus"
	redisPipelineRow = "eventbus Publisher on redisbus (pipelined)"
	redisPeerRow     = "Watermill Redis Streams"
)

func init() {
	register(Scenario{Name: redisRawRow, Broker: redisBroker, Role: RoleRaw, Run: runRedisRaw})
	register(Scenario{Name: redisRawSyncRow, Broker: redisBroker, Role: RoleReference, Run: runRedisRawSync})
	register(Scenario{Name: redisRawCERow, Broker: redisBroker, Role: RoleReference, Run: runRedisRawCE})
	register(Scenario{Name: redisPipelineRow, Broker: redisBroker, Role: RoleBus, Run: runRedisPipeline})
	register(Scenario{Name: redisBusRow, Broker: redisBroker, Role: RoleReference, Run: runRedisBus})
	register(Scenario{Name: redisPeerRow, Broker: redisBroker, Role: RolePeer, Run: runRedisWatermill})
	register(Scenario{Name: "eventbus on redisbus, 64× publishers", Broker: redisBroker, Role: RoleReference, Run: runRedisBusWide})

	registerTarget(ratioTarget(redisBroker, "eventbus Publisher (pipelined) publish ≥ 0.9× raw pipelined XADD", RoleBus, RoleRaw, Result.PublishRate, 0.9))
	registerTarget(ratioTarget(redisBroker, "eventbus consume (of the pipelined row) ≥ 0.9× raw XREADGROUP + batch XACK", RoleBus, RoleRaw, Result.ConsumeRate, 0.9))
	registerTarget(ratioTarget(redisBroker, "eventbus Publisher (pipelined) publish ≥ 3× Watermill", RoleBus, RolePeer, Result.PublishRate, 3))
	registerTarget(ratioTarget(redisBroker, "eventbus consume (of the pipelined row) ≥ 3× Watermill", RoleBus, RolePeer, Result.ConsumeRate, 3))
	registerTarget(ratioOfRows(redisBroker, "eventbus Publisher (pipelined) / raw pipelined XADD of the same fields",
		redisPipelineRow, redisRawCERow, Result.PublishRate))
	registerTarget(ratioOfRows(redisBroker, "eventbus consume (of the pipelined row) / raw XREADGROUP of the same fields",
		redisPipelineRow, redisRawCERow, Result.ConsumeRate))
	registerTarget(ratioOfRows(redisBroker, "eventbus PublishEvent / raw with one XADD awaited per call (the same guarantee per call; goal 0.9×)",
		redisBusRow, redisRawSyncRow, Result.PublishRate))
	registerTarget(ratioOfRows(redisBroker, "eventbus PublishEvent / Watermill (goal 3×)", redisBusRow, redisPeerRow, Result.PublishRate))
}

// redisEnv is one scenario's view of the server: its key prefix and the
// clients it opened.
type redisEnv struct {
	cfg     *redisbus.Config
	prefix  string
	clients []*redis.Client
}

func startRedis(ctx context.Context) (*redisEnv, error) {
	raw := os.Getenv("REDIS_URL")
	if raw == "" {
		raw = "redis://127.0.0.1:6379/0"
	}
	cfg, err := redisbus.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	e := &redisEnv{cfg: cfg, prefix: "bench-" + hex.EncodeToString(b[:])}
	cfg.KeyPrefix = e.prefix
	if err := e.client().Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis at %s (start it with scripts/services.sh redis): %w", cfg.Addrs[0], err)
	}
	return e, nil
}

// client opens a raw client, closed by close.
func (e *redisEnv) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.cfg.Addrs[0], Username: e.cfg.Username, Password: e.cfg.Password,
		DB: e.cfg.DB, PoolSize: 64, DisableIdentity: true})
	e.clients = append(e.clients, c)
	return c
}

// close deletes every key of the scenario and closes the clients.
func (e *redisEnv) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rdb := e.client()
	iter := rdb.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		_ = rdb.Del(ctx, iter.Val()).Err()
	}
	for _, c := range e.clients {
		_ = c.Close()
	}
}

// openBus opens a bus with one redisbus backend, registers what subscribe
// asks for, and starts it.
func (e *redisEnv) openBus(ctx context.Context, subscribe func(*eventbus.Bus) error) (*eventbus.Bus, error) {
	d, err := redisbus.Open(ctx, e.cfg)
	if err != nil {
		return nil, err
	}
	return startBus(ctx, "redis", d, subscribe)
}

// runRedisRaw: each publisher pipelines 64 XADDs (MAXLEN ~) per round trip;
// one consumer reads with XREADGROUP COUNT 256 and acks each batch with one
// XACK.
func runRedisRaw(ctx context.Context, cfg Config) (Result, error) {
	return redisRaw(ctx, cfg, 64, false)
}

// runRedisRawSync: as runRedisRaw with one XADD per call, awaited: the
// guarantee of one PublishEvent.
func runRedisRawSync(ctx context.Context, cfg Config) (Result, error) {
	return redisRaw(ctx, cfg, 1, false)
}

// runRedisRawCE: as runRedisRaw, each entry with the fields redisbus writes
// for the bench's events (ce_specversion, ce_id, ce_source, ce_type, ce_time
// and data): the cost of the CloudEvents attributes on the server and in
// the client, without the bus.
func runRedisRawCE(ctx context.Context, cfg Config) (Result, error) {
	return redisRaw(ctx, cfg, 64, true)
}

func redisRaw(ctx context.Context, cfg Config, batch int, ceFields bool) (Result, error) {
	env, err := startRedis(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	key := env.prefix + ":raw"
	pub, sub := env.client(), env.client()
	if err := sub.XGroupCreateMkStream(ctx, key, "bench", "$").Err(); err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for cctx.Err() == nil {
			res, err := sub.XReadGroup(cctx, &redis.XReadGroupArgs{Group: "bench", Consumer: "c1", Streams: []string{key, ">"},
				Count: 256, Block: 100 * time.Millisecond}).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				if cctx.Err() == nil {
					tr.fail(err)
				}
				return
			}
			ids := make([]string, 0, 256)
			for _, m := range res[0].Messages {
				ids = append(ids, m.ID)
			}
			if err := sub.XAck(cctx, key, "bench", ids...).Err(); err != nil {
				if cctx.Err() == nil {
					tr.fail(err)
				}
				return
			}
			for _, m := range res[0].Messages {
				d, _ := m.Values["data"].(string)
				tr.handled([]byte(d))
			}
		}
	})
	defer wg.Wait()
	defer cancel()
	data := payload(cfg)
	values := func() []any { return []any{"data", data} }
	if ceFields {
		var seq atomic.Int64
		values = func() []any {
			return []any{"ce_specversion", "1.0", "ce_id", strconv.FormatInt(seq.Add(1), 10), "ce_source", "bench",
				"ce_type", benchEventType, "ce_time", time.Now().UTC().Format(time.RFC3339Nano), "data", data}
		}
	}
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		return publisher{batch: batch, publish: func(ctx context.Context, n int) error {
			p := pub.Pipeline()
			for range n {
				p.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: redisMaxLen, Approx: true, Values: values()})
			}
			_, err := p.Exec(ctx)
			return err
		}}, nil
	})
}

// runRedisBus: PublishEvent and a SubscribeEvents handler in group "bench"
// on two buses, each with its own redisbus driver.
func runRedisBus(ctx context.Context, cfg Config) (Result, error) {
	return runRedisBusWith(ctx, cfg, busThroughput)
}

// runRedisPipeline: as runRedisBus, the publishers sharing one
// eventbus.Publisher.
func runRedisPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runRedisBusWith(ctx, cfg, pipelinePublishers)
}

func runRedisBusWith(ctx context.Context, cfg Config, publish busPublish) (Result, error) {
	env, err := startRedis(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	tr := newTracker(cfg.Size)
	consumer, err := env.openBus(ctx, func(b *eventbus.Bus) error {
		return errOnly(b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr)))
	})
	if err != nil {
		return Result{}, fmt.Errorf("consumer bus: %w", err)
	}
	defer consumer.Close(context.WithoutCancel(ctx))
	producer, err := env.openBus(ctx, nil)
	if err != nil {
		return Result{}, fmt.Errorf("publisher bus: %w", err)
	}
	defer producer.Close(context.WithoutCancel(ctx))
	return publish(ctx, cfg, tr, producer)
}

// runRedisBusWide: as runRedisBus with 64 times the publishers.
func runRedisBusWide(ctx context.Context, cfg Config) (Result, error) {
	cfg.Publishers *= 64
	res, err := runRedisBus(ctx, cfg)
	res.Note = joinNotes(res.Note, fmt.Sprintf("%d concurrent publishers", cfg.Publishers))
	return res, err
}

// runRedisWatermill: watermill-redisstream's Publisher (one XADD per
// Publish) and Subscriber in consumer group "bench" (one XREADGROUP and one
// XACK per message), acking from the Subscribe channel.
func runRedisWatermill(ctx context.Context, cfg Config) (Result, error) {
	env, err := startRedis(ctx)
	if err != nil {
		return Result{}, err
	}
	defer env.close(ctx)
	topic := env.prefix + ":watermill"
	p, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: env.client(), DefaultMaxlen: redisMaxLen}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	defer p.Close()
	s, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: env.client(), ConsumerGroup: "bench"}, watermill.NopLogger{})
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
	defer wg.Wait()
	defer s.Close()
	defer cancel()
	return throughput(ctx, cfg, tr, watermillPublisher(p, topic, payload(cfg)))
}
