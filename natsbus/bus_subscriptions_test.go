package natsbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus"
)

// Subscribing and unsubscribing through the Bus many times leaves no consumer
// on the server but the durable group's, which keeps its position (and no
// goroutine: TestMain's goleak check).
func TestBusSubscribeUnsubscribeCyclesLeaveNoConsumer(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	b := eventbus.New(nil)
	if err := b.Register("nats", d); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 2*time.Minute)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		s, err := js.Stream(ctx, "EVENTBUS_EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}

	const cycles = 1000
	for i := range cycles {
		group := ""
		if i%2 == 0 {
			group = "cycling"
		}
		sub, err := b.SubscribeEvents(ctx, []string{"cycle.tick"}, group, h)
		if err != nil {
			t.Fatalf("cycle %d: subscribe: %v", i, err)
		}
		if err := sub.Close(ctx); err != nil {
			t.Fatalf("cycle %d: close: %v", i, err)
		}
	}
	// The durable group stays; every private subscription's consumer is gone.
	if n := consumers(); n != 1 {
		t.Fatalf("%d consumers on the events stream after %d cycles, want the durable group's only", n, cycles)
	}

	// The group kept its position: what is published while it has no
	// member reaches its next member.
	m, err := eventbus.NewMessage("cycle.tick", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	sub, err := b.SubscribeEvents(ctx, []string{"cycle.tick"}, "cycling", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got <- m.ID
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	select {
	case id := <-got:
		if id != m.ID {
			t.Fatalf("got %s, want %s", id, m.ID)
		}
	case <-ctx.Done():
		t.Fatal("the group lost the message published while it had no member")
	}
}
