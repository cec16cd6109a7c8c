// Command multibackend runs one bus over two backends, configured by a file
// (eventbus.yaml): orders — events, commands and queries — go through NATS
// with JetStream (the embedded server), page views stream through Redis
// Streams, and so do audit events, by routes. The program is the same
// whatever the file says: moving the analytics stream to Kafka is a change
// of URL.
//
// It needs Redis on 127.0.0.1:6379 (./scripts/services.sh redis starts it),
// or REDIS_URL:
//
//	go run ./examples/multibackend
//	REDIS_URL=redis://10.0.0.5:6379/2 go run ./examples/multibackend
//
// Each message prints the backend that carried it, as an Observer of the bus
// sees it.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	_ "github.com/marty-msf/eventbus/natsbus"
	_ "github.com/marty-msf/eventbus/redisbus"
)

//go:embed eventbus.yaml
var configFile []byte

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "multibackend-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(ctx, dir, "", os.LookupEnv, os.Stdout); err != nil {
		log.Print(err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
}

// carried records which backend carried each published message type.
type carried struct {
	mu sync.Mutex
	by map[string]string
}

func (c *carried) Publish(_ context.Context, op eventbus.Operation, msgs []*eventbus.Message) func(error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		c.by[m.Type] = fmt.Sprintf("%s (%s)", op.Backend, op.System)
	}
	return func(error) {}
}

func (c *carried) Handle(ctx context.Context, _ eventbus.Operation, _ []*eventbus.Message) (context.Context, func(error)) {
	return ctx, func(error) {}
}

func (c *carried) Settled(eventbus.Operation, *eventbus.Message, eventbus.Settlement) {}

// run starts the configured bus with its data in dataDir; names get suffix
// so that runs on a shared Redis do not see each other's messages.
func run(ctx context.Context, dataDir, suffix string, lookupEnv func(string) (string, bool), out io.Writer) error {
	env := func(k string) (string, bool) {
		if k == "DATA_DIR" {
			return dataDir, true
		}
		return lookupEnv(k)
	}
	c, err := config.Parse("eventbus.yaml", configFile, &config.Options{LookupEnv: env, Environ: func() []string { return nil }})
	if err != nil {
		return err
	}
	obs := &carried{by: map[string]string{}}
	bus, err := c.NewBus(ctx, &eventbus.Options{Observer: obs})
	if err != nil {
		return err
	}
	defer bus.Close(context.WithoutCancel(ctx))

	var wg sync.WaitGroup
	var mu sync.Mutex
	var lines []string
	got := func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
		wg.Done()
	}
	orderPlaced, audit, views := "order.placed"+suffix, "audit.login"+suffix, "page-views"+suffix
	if _, err := bus.SubscribeEvents(ctx, []string{orderPlaced}, "billing", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got("billing got %s", m.Type)
		return nil
	})); err != nil {
		return err
	}
	if _, err := bus.SubscribeEvents(ctx, []string{audit}, "security", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got("security got %s", m.Type)
		return nil
	})); err != nil {
		return err
	}
	if _, err := bus.ProcessStream(ctx, views, "dashboard", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
		for _, m := range ms {
			got("dashboard got %s of %s", m.Type, m.Key)
		}
		return nil
	}), &eventbus.BatchOptions{Size: 10, MaxWait: 100 * time.Millisecond}); err != nil {
		return err
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "backends: %s\n", strings.Join(bus.Backends(), ", "))

	wg.Add(4)
	for _, send := range []func() error{
		func() error { return bus.PublishEvent(ctx, msg(orderPlaced, "")) },
		func() error { return bus.PublishEvent(ctx, msg(audit, "")) },
		func() error {
			return bus.PublishStream(ctx, views, msg("page.viewed", "user-1"), msg("page.viewed", "user-2"))
		},
	} {
		if err := send(); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("not every message arrived: %w", ctx.Err())
	}
	obs.mu.Lock()
	types := make([]string, 0, len(obs.by))
	for t := range obs.by {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		fmt.Fprintf(out, "%-24s went through %s\n", strings.TrimSuffix(t, suffix), obs.by[t])
	}
	obs.mu.Unlock()
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(out, strings.ReplaceAll(l, suffix, ""))
	}
	return nil
}

func msg(msgType, key string) *eventbus.Message {
	data := fmt.Sprintf(`{"at":%q}`, time.Now().UTC().Format(time.RFC3339))
	return &eventbus.Message{Type: msgType, Key: key, DataContentType: "application/json", Data: []byte(data)}
}
