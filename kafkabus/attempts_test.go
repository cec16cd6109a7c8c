package kafkabus_test

import (
	"context"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestAttemptsSurviveMembers: a message whose every receiver dies holding
// it reaches the next member of the group with an Attempt one higher each
// time (1, 2, 3), and the last member acks it.
func TestAttemptsSurviveMembers(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 2*time.Minute)
	dst := driver.NewDestination(driver.Stream, "attempts."+unique())
	opts := driver.SubscribeOptions{Group: "svc", AckWait: time.Second}
	pub := openDriver(t, testConfig())
	member := func() (driver.Driver, driver.Subscription) {
		t.Helper()
		d, err := openCuttable(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = d.Close(cctx)
		})
		sub, err := d.Subscribe(ctx, dst, opts)
		if err != nil {
			t.Fatal(err)
		}
		return d, sub
	}
	d, sub := member()
	m := &driver.Message{ID: "doomed-1", Source: "/t", Type: "t", Key: "k", Data: []byte("x")}
	if err := pub.Publish(ctx, dst, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatalf("delivery %d: %v", want, err)
		}
		if got := ds[0]; got.Message.ID != m.ID || got.Attempt != want {
			t.Fatalf("delivery %d: %s with Attempt %d, want %s with Attempt %d", want, got.Message.ID, got.Attempt, m.ID, want)
		}
		if want == 3 {
			if err := sub.Ack(ctx, ds); err != nil {
				t.Fatal(err)
			}
			break
		}
		next, nextSub := member()
		if err := crash(d); err != nil {
			t.Fatal(err)
		}
		d, sub = next, nextSub
	}
}
