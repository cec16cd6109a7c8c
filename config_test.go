package eventbus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// named presents a membus connection as another kind of broker with chosen
// capabilities, to test routing and validation.
type named struct {
	driver.Driver
	name     string
	patterns []driver.Pattern
	durable  bool
}

func (n named) Capabilities() driver.Capabilities {
	c := n.Driver.Capabilities()
	c.Name = n.name
	if n.patterns != nil {
		c.Patterns = n.patterns
	}
	c.Durable = n.durable
	c.NativeRequestReply = false
	return c
}

func TestInvalidInputGetsTypedErrors(t *testing.T) {
	broker := membus.New(nil)
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker))
	h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })
	for name, err := range map[string]error{
		"empty type":         errOnly(b.SubscribeEvents(context.Background(), []string{""}, "", h)),
		"no types":           errOnly(b.SubscribeEvents(context.Background(), nil, "", h)),
		"space in type":      errOnly(b.SubscribeEvents(context.Background(), []string{"order created"}, "", h)),
		"empty token":        errOnly(b.SubscribeEvents(context.Background(), []string{"order..created"}, "", h)),
		"wildcard":           errOnly(b.SubscribeEvents(context.Background(), []string{"order.*"}, "", h)),
		"dotted service":     errOnly(b.HandleCommand(context.Background(), "billing.eu", "charge", h)),
		"empty service":      errOnly(b.HandleQuery(context.Background(), "", "price", eventbus.QueryHandlerFunc(nil))),
		"bad group":          errOnly(b.SubscribeEvents(context.Background(), []string{"a"}, "g/1", h)),
		"long type":          errOnly(b.SubscribeEvents(context.Background(), []string{strings.Repeat("a", 200)}, "", h)),
		"bad stream":         errOnly(b.ProcessStream(context.Background(), "", "g", eventbus.BatchHandlerFunc(nil), nil)),
		"bad backend name":   b.Register("", membus.New(nil)),
		"empty batch group":  errOnly(b.ProcessStream(context.Background(), "clicks", "", eventbus.BatchHandlerFunc(nil), nil)),
		"dot in backend":     b.Register("a.b", membus.New(nil)),
		"leading dash token": errOnly(b.SubscribeEvents(context.Background(), []string{"-a"}, "", h)),
	} {
		if !errors.Is(err, eventbus.ErrInvalidName) {
			t.Errorf("%s: got %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := b.SubscribeEvents(context.Background(), []string{"a"}, "", nil); !errors.Is(err, eventbus.ErrNilHandler) {
		t.Errorf("nil handler: %v", err)
	}
	if _, err := b.HandleCommand(context.Background(), "billing", "charge", nil); !errors.Is(err, eventbus.ErrNilHandler) {
		t.Errorf("nil command handler: %v", err)
	}
	must(t, errOnly(b.HandleCommand(context.Background(), "billing", "charge", h)))
	if _, err := b.HandleCommand(context.Background(), "billing", "charge", h); !errors.Is(err, eventbus.ErrDuplicateHandler) {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := b.SubscribeEvents(context.Background(), []string{"x", "x"}, "g", h); !errors.Is(err, eventbus.ErrDuplicateHandler) {
		t.Errorf("duplicate in one call: %v", err)
	}
	if err := b.Register("mem", membus.New(nil)); err == nil {
		t.Error("registering a backend name twice succeeded")
	}
	if err := b.Register("nil", nil); err == nil {
		t.Error("nil driver accepted")
	}
	if err := b.PublishEvent(context.Background(), event(t, "a", 1)); !errors.Is(err, eventbus.ErrNotStarted) {
		t.Errorf("publish before start: %v", err)
	}
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())
	ctx := ctxT(t)
	if err := b.PublishEvent(ctx, nil); !errors.Is(err, eventbus.ErrMalformed) {
		t.Errorf("nil message: %v", err)
	}
	if err := b.PublishEvent(ctx, &eventbus.Message{}); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("message without type: %v", err)
	}
	if err := b.SendCommand(ctx, "", event(t, "a", 1)); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("command without service: %v", err)
	}
	big := &eventbus.Message{Type: "blob", Data: make([]byte, 1<<20)}
	err := b.PublishEvent(ctx, big)
	var tooLarge *driver.TooLargeError
	if !errors.Is(err, eventbus.ErrTooLarge) || !errors.As(err, &tooLarge) || tooLarge.Limit != 1<<20 {
		t.Errorf("oversize: %v", err)
	}
	if _, err := b.HandleCommand(context.Background(), "late", "", h); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("register after start, invalid: %v", err)
	}
	if err := b.Start(ctx); !errors.Is(err, eventbus.ErrStarted) {
		t.Errorf("second start: %v", err)
	}
}

func TestStartReportsEveryProblemAtOnce(t *testing.T) {
	b := eventbus.New(&eventbus.Options{
		DefaultBackend: "nope",
		Routes: []eventbus.Route{
			{Pattern: eventbus.EventPattern, Backend: "ghost"},
			{Pattern: eventbus.StreamPattern, Backend: "cache"},
			{Pattern: eventbus.EventPattern, Match: "[", Backend: "mem"},
		},
	})
	must(t, b.Register("mem", membus.New(nil)))
	must(t, b.Register("cache", named{Driver: membus.New(nil), name: "redis", patterns: []driver.Pattern{driver.Event, driver.Broadcast}}))
	must(t, errOnly(b.ProcessStream(context.Background(), "clicks", "analytics", eventbus.BatchHandlerFunc(func(context.Context, []*eventbus.Message) error { return nil }), nil)))
	err := b.Start(context.Background())
	var cfg *eventbus.ConfigError
	if !errors.As(err, &cfg) {
		t.Fatalf("Start: %v, want *ConfigError", err)
	}
	if !errors.Is(err, eventbus.ErrUnknownBackend) || !errors.Is(err, eventbus.ErrCapability) {
		t.Fatalf("Start error does not match its problems: %v", err)
	}
	// ghost route, redis stream route, bad glob, unknown default, and the
	// stream handler that the redis route cannot serve.
	if len(cfg.Problems) != 5 {
		t.Fatalf("got %d problems, want 5:\n%v", len(cfg.Problems), err)
	}
	for _, want := range []string{`"ghost"`, `"nope"`, "bad glob", "lacks pattern stream, Durable", "streams.clicks"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRoutingAcrossBackends(t *testing.T) {
	nats, kafka, rabbit := membus.New(nil), membus.New(nil), membus.New(nil)
	defer nats.Close(context.Background())
	defer kafka.Close(context.Background())
	defer rabbit.Close(context.Background())
	b := eventbus.New(&eventbus.Options{
		Routes: []eventbus.Route{{Pattern: eventbus.EventPattern, Match: "audit.*", Backend: "rabbit"}},
	})
	must(t, b.Register("rabbit", named{Driver: rabbit.Connect(), name: "rabbitmq", durable: true}))
	must(t, b.Register("kafka", named{Driver: kafka.Connect(), name: "kafka", durable: true}))
	must(t, b.Register("nats", named{Driver: nats.Connect(), name: "nats", durable: true}))
	must(t, b.Start(context.Background()))
	defer b.Close(context.Background())

	// Each case: where the selection matrix or the route must place it.
	cases := []struct {
		broker *membus.Driver
		dest   driver.Destination
		send   func(ctx context.Context) error
	}{
		{nats, driver.NewDestination(driver.Event, "order.created"), func(ctx context.Context) error {
			return b.PublishEvent(ctx, event(t, "order.created", 1))
		}},
		{rabbit, driver.NewDestination(driver.Event, "audit.login"), func(ctx context.Context) error {
			return b.PublishEvent(ctx, event(t, "audit.login", 1))
		}},
		{rabbit, driver.NewDestination(driver.Command, "billing", "charge"), func(ctx context.Context) error {
			return b.SendCommand(ctx, "billing", event(t, "charge", 1))
		}},
		{kafka, driver.NewDestination(driver.Stream, "clicks"), func(ctx context.Context) error {
			return b.PublishStream(ctx, "clicks", event(t, "click", 1))
		}},
		{nats, driver.NewDestination(driver.Broadcast, "cache.flush"), func(ctx context.Context) error {
			return b.Broadcast(ctx, event(t, "cache.flush", 1))
		}},
	}
	for _, tc := range cases {
		ctx := ctxT(t)
		var subs []driver.Subscription
		for _, br := range []*membus.Driver{nats, kafka, rabbit} {
			s, err := br.Subscribe(ctx, tc.dest, driver.SubscribeOptions{})
			must(t, err)
			subs = append(subs, s)
		}
		must(t, tc.send(ctx))
		for i, br := range []*membus.Driver{nats, kafka, rabbit} {
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			ds, err := subs[i].Receive(short, 1)
			cancel()
			if got, want := err == nil && len(ds) == 1, br == tc.broker; got != want {
				t.Errorf("%s: delivered to backend %d: %v, want %v", tc.dest.Name, i, got, want)
			}
			subs[i].Close(ctx)
		}
	}
}

func TestCloseDrainsInFlightHandlersAndRefusesWork(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	started := make(chan struct{})
	var finished sync.WaitGroup
	finished.Add(1)
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, errOnly(b.HandleCommand(context.Background(), "worker", "job", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		close(started)
		time.Sleep(200 * time.Millisecond)
		finished.Done()
		return nil
	}))))
	must(t, b.Start(context.Background()))
	must(t, b.SendCommand(ctxT(t), "worker", event(t, "job", 1)))
	<-started
	closing := time.Now()
	must(t, b.Close(ctxT(t)))
	if time.Since(closing) < 150*time.Millisecond {
		t.Fatal("Close returned before the in-flight handler finished")
	}
	finished.Wait()
	if err := b.SendCommand(ctxT(t), "worker", event(t, "job", 2)); !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := b.Query(ctxT(t), "worker", event(t, "q", 2)); !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("query after close: %v", err)
	}
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestCloseDeadlineCancelsHandlers(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	started := make(chan struct{})
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	must(t, errOnly(b.HandleCommand(context.Background(), "worker", "job", eventbus.HandlerFunc(func(ctx context.Context, _ *eventbus.Message) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}))))
	must(t, b.Start(context.Background()))
	must(t, b.SendCommand(ctxT(t), "worker", event(t, "job", 1)))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close past its deadline: %v", err)
	}
}
