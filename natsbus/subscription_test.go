package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestMaxInFlight: a subscription never hands out more unsettled deliveries
// than MaxInFlight; settling frees room.
func TestMaxInFlight(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	for _, dest := range []driver.Destination{
		driver.NewDestination(driver.Command, "limited", "do"),
		driver.NewDestination(driver.Broadcast, "limited"),
	} {
		t.Run(dest.Pattern.String(), func(t *testing.T) {
			ctx := ctxFor(t, 10*time.Second)
			sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "limited", MaxInFlight: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close(context.Background())
			var msgs []*driver.Message
			for i := range 5 {
				msgs = append(msgs, &driver.Message{ID: fmt.Sprint(i), Source: "/l", Type: "l"})
			}
			if err := d.Publish(ctx, dest, msgs); err != nil {
				t.Fatal(err)
			}
			var held []*driver.Delivery
			for len(held) < 2 {
				ds, err := sub.Receive(ctx, 10)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, ds...)
			}
			if len(held) != 2 {
				t.Fatalf("%d deliveries handed out, MaxInFlight is 2", len(held))
			}
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if ds, err := sub.Receive(short, 10); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Receive beyond MaxInFlight returned %d deliveries, %v", len(ds), err)
			}
			if err := sub.Ack(ctx, held[:1]); err != nil {
				t.Fatal(err)
			}
			ds, err := sub.Receive(ctx, 10)
			if err != nil || len(ds) != 1 {
				t.Fatalf("after one ack Receive = %d deliveries, %v; want 1", len(ds), err)
			}
			if got := held[0].Message.ID + held[1].Message.ID + ds[0].Message.ID; got != "012" {
				t.Errorf("delivered %q, want 0, 1, 2 in order", got)
			}
		})
	}
}
