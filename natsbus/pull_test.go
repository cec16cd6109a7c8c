package natsbus_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestBacklogKeepsFlowing consumes a stored backlog through a subscription
// that pulls two messages at a time, for as many pull requests as possible,
// and fails when nothing arrives for gapLimit before the backlog is consumed.
// The jetstream client sometimes stops pulling (a pull request falling due
// while the previous one is still being sent is skipped) and pulls again
// only after two missed heartbeats: 30 s with the client's defaults, about
// 2 s with the driver's. The race is hit mostly under the race detector.
func TestBacklogKeepsFlowing(t *testing.T) {
	const (
		n        = 20000
		gapLimit = 8 * time.Second
	)
	srv := startServer(t, nil)
	cfg := serverConfig(srv)
	cfg.Options.Prefetch = 2
	d := openDriver(t, cfg)
	ctx := ctxFor(t, time.Minute)
	dest := driver.NewDestination(driver.Event, "backlog", "flow")
	data := make([]byte, 64)
	msgs := make([]*driver.Message, n)
	for i := range msgs {
		msgs[i] = &driver.Message{ID: "flow-" + strconv.Itoa(i), Source: "/backlog", Type: "backlog.flow", Data: data}
	}
	if err := d.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "flow", StartAt: driver.StartFirst})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	consumeBacklog(t, sub, n, gapLimit)
}

// consumeBacklog receives and acks the n messages "flow-0", "flow-1", ... in
// that order, failing when none arrives for gap.
func consumeBacklog(t *testing.T, sub driver.Subscription, n int, gap time.Duration) {
	t.Helper()
	next := 0
	for next < n {
		ctx, cancel := context.WithTimeout(context.Background(), gap)
		ds, err := sub.Receive(ctx, 64)
		cancel()
		if err != nil {
			t.Fatalf("nothing received for %v after %d of %d messages: %v", gap, next, n, err)
		}
		for _, dl := range ds {
			if want := "flow-" + strconv.Itoa(next); dl.Message.ID != want {
				t.Fatalf("got %s, want %s", dl.Message.ID, want)
			}
			next++
		}
		if err := sub.Ack(context.Background(), ds); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
}
