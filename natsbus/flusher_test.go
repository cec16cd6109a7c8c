package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// TestCorePublishConcurrent: concurrent core NATS publishers share flushes;
// every message a Publish confirmed reaches a subscriber on another
// connection, each publisher's in its publish order.
func TestCorePublishConcurrent(t *testing.T) {
	srv := startServer(t, nil)
	pub := openDriver(t, serverConfig(srv))
	recv := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Broadcast, "flush")
	sub, err := recv.Subscribe(ctx, dest, driver.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	const publishers, each = 8, 50
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				m := &driver.Message{ID: fmt.Sprintf("%d-%d", p, i), Source: "/flush", Type: "flush", Key: fmt.Sprint(p), Data: []byte{byte(i)}}
				if err := pub.Publish(ctx, dest, []*driver.Message{m}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]int, publishers)
	for got := 0; got < publishers*each; {
		ds, err := sub.Receive(ctx, 64)
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		for _, d := range ds {
			var p int
			if _, err := fmt.Sscan(d.Message.Key, &p); err != nil || p < 0 || p >= publishers {
				t.Fatalf("unexpected key %q", d.Message.Key)
			}
			if want := fmt.Sprintf("%d-%d", p, next[p]); d.Message.ID != want || d.Message.Data[0] != byte(next[p]) {
				t.Fatalf("publisher %d: got %s (data %d), want %s", p, d.Message.ID, d.Message.Data[0], want)
			}
			next[p]++
		}
		got += len(ds)
	}
}

// TestCorePublishDuringClose: publishers racing Close end with nil or a
// closed/unavailable error, and Close leaves no goroutine behind.
func TestCorePublishDuringClose(t *testing.T) {
	srv := startServer(t, nil)
	d, err := natsbus.Open(ctxFor(t, 10*time.Second), serverConfig(srv))
	if err != nil {
		t.Fatal(err)
	}
	dest := driver.NewDestination(driver.Broadcast, "closing")
	ctx := ctxFor(t, 10*time.Second)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := d.Publish(ctx, dest, []*driver.Message{{ID: fmt.Sprintf("%d-%d", p, i), Source: "/c", Type: "c"}})
				if err == nil {
					continue
				}
				if !errors.Is(err, driver.ErrClosed) && !errors.Is(err, driver.ErrUnavailable) {
					t.Errorf("publish during close: %v", err)
				}
				return
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
