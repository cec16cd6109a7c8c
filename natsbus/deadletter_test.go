package natsbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/natsbus"
)

// injectDeadLetter stores body on dl as a plain JetStream message, without
// any CloudEvents header.
func injectDeadLetter(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error {
	_, err := d.(*natsbus.Driver).JetStream().Publish(ctx, dl.Name, body)
	return err
}

func TestDeadLetterConformance(t *testing.T) {
	srv := startServer(t, nil)
	drivertest.RunDeadLetterTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, serverConfig(srv))
		},
		Crash:            crash,
		Deduplicates:     true,
		InjectDeadLetter: injectDeadLetter,
	})
}

// Reading creates no consumer and moves none: a durable group on the
// dead-letter destination keeps every message pending. Names carry the
// subject prefix on the wire and not in the API. JetStream off, and
// destinations of other patterns, are refused.
func TestDeadLetterStoreDetails(t *testing.T) {
	srv := startServer(t, nil)
	cfg := serverConfig(srv)
	cfg.Options.SubjectPrefix = "tenant1"
	cfg.Options.StreamPrefix = "TENANT1"
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 30*time.Second)
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "order.created"))
	sub, err := d.Subscribe(ctx, dl, driver.SubscribeOptions{Group: "audit", Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	msgs := []*driver.Message{
		{ID: "1", Source: "/test", Type: "order.created", Data: []byte("one")},
		{ID: "2", Source: "/test", Type: "order.created", Data: []byte("two")},
	}
	if err := d.Publish(ctx, dl, msgs); err != nil {
		t.Fatal(err)
	}
	st, err := d.JetStream().Stream(ctx, d.StreamName(driver.DeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	before := consumers()
	var got []string
	if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
		got = append(got, e.Message.ID+"="+string(e.Message.Data))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1=one", "2=two"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if after := consumers(); after != before {
		t.Fatalf("the stream has %d consumers after a read, %d before", after, before)
	}
	var group jetstream.Consumer
	for c := range st.ListConsumers(ctx).Info() {
		if c.Config.Durable != "" {
			group, err = st.Consumer(ctx, c.Name)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if group == nil {
		t.Fatal("no durable consumer for the group")
	}
	info, err := group.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending+uint64(info.NumAckPending) != 2 {
		t.Fatalf("the group's consumer after a read: pending %d, ack pending %d, delivered %d; want both messages still for it",
			info.NumPending, info.NumAckPending, info.Delivered.Stream)
	}

	dests, err := d.DeadLetterDestinations(ctx)
	if err != nil || !slices.Equal(dests, []driver.Destination{dl}) {
		t.Fatalf("DeadLetterDestinations = %v, %v; want [%s] without the subject prefix", dests, err, dl)
	}

	var derr *natsbus.DestinationError
	if _, err := d.PurgeDeadLetters(ctx, driver.NewDestination(driver.Event, "order.created")); !errors.As(err, &derr) {
		t.Fatalf("purge of an event destination: %v, want a *natsbus.DestinationError", err)
	}
	off := false
	core := openDriver(t, &natsbus.Config{Servers: cfg.Servers, Options: natsbus.Options{JetStream: &off}})
	if err := core.ReadDeadLetters(ctx, dl, func(driver.DeadLetterEntry) bool { return true }); !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("read without JetStream: %v, want ErrUnsupported", err)
	}
	_ = d.Close(ctx)
	if _, err := d.DeleteDeadLetters(ctx, dl, []string{"1"}); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("delete after Close: %v, want ErrClosed", err)
	}
}
