// Command backends runs the same small workload on one backend, chosen by
// name or URL, and prints what that backend declares it can do: the one
// thing that changes between brokers is the URL.
//
//	go run ./examples/backends                     # the embedded default, nothing to install
//	go run ./examples/backends -backend nats       # NATS with JetStream on 127.0.0.1:4222
//	go run ./examples/backends -backend kafka      # Kafka (or kfake) on 127.0.0.1:9092
//	go run ./examples/backends -backend rabbitmq   # RabbitMQ on 127.0.0.1:5672
//	go run ./examples/backends -backend redis      # Redis Streams on 127.0.0.1:6379
//	go run ./examples/backends -backend aws        # SNS+SQS (an emulator on 127.0.0.1:4566)
//	go run ./examples/backends -url 'nats://nats.internal:4222?ack_wait=1m'
//
// The workload: three events to a consumer group, three commands to a
// service, a query answered by that service (on backends that serve
// queries) and three records on a keyed stream. Each backend's URL below
// shows its usual configuration; every driver's package documentation lists
// its parameters. For SNS+SQS the credentials come from the AWS chain
// (AWS_ACCESS_KEY_ID...), or the URL's access_key_id and secret_access_key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	_ "github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	_ "github.com/marty-msf/eventbus/kafkabus"
	_ "github.com/marty-msf/eventbus/membus"
	_ "github.com/marty-msf/eventbus/natsbus"
	_ "github.com/marty-msf/eventbus/rabbitbus"
	_ "github.com/marty-msf/eventbus/redisbus"
)

// Backends are the example URLs of each backend, as the services that
// scripts/services.sh starts serve them.
var Backends = map[string]string{
	// An in-process NATS server with JetStream file storage in a
	// temporary directory; embedded:DIR keeps the data in DIR.
	"embedded": "embedded:",
	// JetStream is on by default; ack_wait bounds a handler's time before
	// redelivery.
	"nats": "nats://127.0.0.1:4222?ack_wait=30s",
	// Several brokers: ?brokers=host2:9092; TLS and SASL by parameters.
	"kafka": "kafka://127.0.0.1:9092",
	// The vhost is the path; queue_type=quorum for replicated queues.
	"rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
	// The database number is the path; rediss:// for TLS.
	"redis": "redis://127.0.0.1:6379/0",
	// The host is the region; endpoint points at an emulator or a VPC
	// endpoint.
	"aws": "aws://us-east-1?endpoint=http://127.0.0.1:4566",
}

func main() {
	backend := flag.String("backend", "embedded", "embedded, nats, kafka, rabbitmq, redis or aws")
	url := flag.String("url", "", "backend URL, instead of -backend's")
	flag.Parse()
	if *url == "" {
		u, ok := Backends[*backend]
		if !ok {
			log.Fatalf("unknown -backend %q: give embedded, nats, kafka, rabbitmq, redis or aws, or a -url", *backend)
		}
		*url = u
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, *url, "example", os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run opens the backend of rawURL and runs the workload on it; names are
// prefixed with prefix so that runs do not see each other's messages.
func run(ctx context.Context, rawURL, prefix string, out io.Writer) error {
	d, err := driver.OpenURL(ctx, rawURL, nil)
	if err != nil {
		return err
	}
	caps := d.Capabilities()
	bus := eventbus.New(&eventbus.Options{Source: "backends-example"})
	if err := bus.Register("main", d); err != nil {
		_ = d.Close(ctx)
		return err
	}
	defer bus.Close(context.WithoutCancel(ctx))
	fmt.Fprintf(out, "backend %s\n", driver.RedactURL(rawURL))

	var mu sync.Mutex
	var got []string
	seen := make(chan struct{}, 16)
	record := func(what string) {
		mu.Lock()
		got = append(got, what)
		mu.Unlock()
		seen <- struct{}{}
	}
	type payload struct {
		N int `json:"n"`
	}
	orderPlaced, ship, clicks := prefix+".order.placed", prefix+".ship", prefix+"-clicks"
	service := prefix + "-shipping"
	if _, err := bus.SubscribeEvents(ctx, []string{orderPlaced}, "audit", eventbus.Typed(func(_ context.Context, _ *eventbus.Message, p payload) error {
		record(fmt.Sprintf("event %d", p.N))
		return nil
	})); err != nil {
		return err
	}
	if _, err := bus.HandleCommand(ctx, service, ship, eventbus.Typed(func(_ context.Context, _ *eventbus.Message, p payload) error {
		record(fmt.Sprintf("command %d", p.N))
		return nil
	})); err != nil {
		return err
	}
	if _, err := bus.ProcessStream(ctx, clicks, "counter", eventbus.TypedBatch(func(_ context.Context, ms []*eventbus.Message, ps []payload) error {
		for i, p := range ps {
			record(fmt.Sprintf("stream %s/%d", ms[i].Key, p.N))
		}
		return nil
	}), &eventbus.BatchOptions{Size: 3, MaxWait: 100 * time.Millisecond}); err != nil {
		return err
	}
	queries := slices.Contains(caps.Patterns, driver.Query)
	quote := prefix + ".quote"
	if queries {
		if _, err := bus.HandleQuery(ctx, service, quote, eventbus.TypedQuery(func(_ context.Context, _ *eventbus.Message, sku string) (int, error) {
			return 499, nil
		})); err != nil {
			return err
		}
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "  driver %s: %s\n", caps.Name, describe(caps))
	// Dead letters: browsable (eventbus dlq, Bus.DeadLetters) where the
	// driver implements driver.DeadLetterStore.
	if _, err := bus.DeadLetters().List(ctx, eventbus.DeadLetterFilter{Limit: 1}); errors.Is(err, eventbus.ErrCapability) {
		fmt.Fprintln(out, "  dead letters: kept, not browsable through the bus")
	} else if err != nil {
		return err
	} else {
		fmt.Fprintln(out, "  dead letters: browsable (Bus.DeadLetters, eventbus dlq)")
	}

	want := 9
	for i := 1; i <= 3; i++ {
		if err := publish(ctx, bus.PublishEvent, orderPlaced, i, ""); err != nil {
			return err
		}
		if err := publish(ctx, func(ctx context.Context, m *eventbus.Message) error { return bus.SendCommand(ctx, service, m) }, ship, i, ""); err != nil {
			return err
		}
		if err := publish(ctx, func(ctx context.Context, m *eventbus.Message) error { return bus.PublishStream(ctx, clicks, m) }, clicks+".click", i, "user-7"); err != nil {
			return err
		}
	}
	if queries {
		q, err := eventbus.NewMessage(quote, "book-42")
		if err != nil {
			return err
		}
		reply, err := bus.Query(ctx, service, q)
		if err != nil {
			return err
		}
		var price int
		if err := bus.Decode(reply, &price); err != nil {
			return err
		}
		fmt.Fprintf(out, "  query answered: price %d\n", price)
	}
	for i := 0; i < want; i++ {
		select {
		case <-seen:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages received: %w", i, want, ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	fmt.Fprintf(out, "  received: %s\n", strings.Join(got, ", "))
	return nil
}

func publish(ctx context.Context, send func(context.Context, *eventbus.Message) error, msgType string, n int, key string) error {
	m, err := eventbus.NewMessage(msgType, map[string]int{"n": n})
	if err != nil {
		return err
	}
	m.Key = key
	return send(ctx, m)
}

// describe says what a driver declares.
func describe(c driver.Capabilities) string {
	yes := func(b bool, s string) string {
		if b {
			return s
		}
		return "no " + s
	}
	var ps []string
	for _, p := range c.Patterns {
		ps = append(ps, p.String())
	}
	return fmt.Sprintf("patterns %s; %s, %s, %s, %s, %s",
		strings.Join(ps, " "), yes(c.Durable, "durable groups"), yes(c.OrderingByKey, "ordering by key"),
		yes(c.Redelivery, "redelivery"), yes(c.NativeDelay, "native delay"), yes(c.NativeRequestReply, "native request/reply"))
}
