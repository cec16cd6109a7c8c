package natsbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

func TestPrivateSubscriptionAcrossRestart(t *testing.T) {
	eo := natsbus.EmbeddedOptions{Port: freePort(t), DataDir: t.TempDir()}
	ctx := ctxFor(t, 60*time.Second)
	srv, err := natsbus.StartServer(ctx, &eo)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	d := openDriver(t, &natsbus.Config{Servers: []string{srv.ClientURL()}, ReconnectWait: 50 * time.Millisecond})
	dest := driver.NewDestination(driver.Event, "private", "restart")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	msg := func(id string) []*driver.Message {
		return []*driver.Message{{ID: id, Source: "/p", Type: "p"}}
	}
	if err := d.Publish(ctx, dest, msg("before")); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil || ds[0].Message.ID != "before" {
		t.Fatalf("before restart: %v %v", ds, err)
	}
	_ = sub.Ack(ctx, ds)
	_ = srv.Shutdown(ctx)
	// While the server is down, a publish that runs out of time fails: it is
	// never reported as stored.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err = d.Publish(short, dest, msg("during"))
	cancelShort()
	if !errors.Is(err, driver.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish while the server is down: %v, want ErrUnavailable and the deadline", err)
	}
	srv, err = natsbus.StartServer(ctx, &eo)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Publish(ctx, dest, msg("after")); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// "during" may or may not have been stored (at least once); "after" must
	// arrive.
	for {
		ds, err = sub.Receive(rctx, 1)
		if err != nil {
			t.Fatalf("after restart: %v", err)
		}
		if ds[0].Message.ID == "after" {
			break
		}
	}
}

// TestConsumerDeletedEndsReceive: when an operator deletes a group's
// consumer, Receive fails with ErrUnavailable instead of waiting forever.
func TestConsumerDeletedEndsReceive(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	dest := driver.NewDestination(driver.Command, "svc", "deleted")
	ctx := ctxFor(t, 20*time.Second)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "svc", Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	js := d.JetStream()
	st, err := js.Stream(ctx, d.StreamName(driver.Command))
	if err != nil {
		t.Fatal(err)
	}
	lister := st.ListConsumers(ctx)
	var names []string
	for info := range lister.Info() {
		names = append(names, info.Name)
	}
	if len(names) != 1 {
		t.Fatalf("consumers %v, want one", names)
	}
	if err := js.DeleteConsumer(ctx, d.StreamName(driver.Command), names[0]); err != nil {
		t.Fatal(err)
	}
	_, err = sub.Receive(ctx, 1)
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Receive after the consumer was deleted: %v, want ErrUnavailable", err)
	}
	t.Log(err)
}

// TestPublishToDeletedStreamFails: with its stream deleted under it, a
// publish without deadline fails after a bounded number of retries.
func TestPublishToDeletedStreamFails(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 30*time.Second)
	if err := d.JetStream().DeleteStream(ctx, d.StreamName(driver.Stream)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := d.Publish(context.Background(), driver.NewDestination(driver.Stream, "gone"), []*driver.Message{{ID: "1", Source: "/s", Type: "t"}})
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Publish to a deleted stream: %v, want ErrUnavailable", err)
	}
	t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
