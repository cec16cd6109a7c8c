package kafkabus_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/kafkabus"
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
		// The member dies once its delivered mark reached the broker: a
		// member that dies within markDelay and a round trip of the
		// hand-out leaves the count one short (documented).
		awaitMark(t, ctx, pub, pub.GroupID(dst, opts.Group), want)
		if err := crash(d); err != nil {
			t.Fatal(err)
		}
		d, sub = next, nextSub
	}
}

// awaitMark waits until the group's committed offsets carry a delivered
// mark with the given attempt count (the metadata ends in " <attempts>").
func awaitMark(t *testing.T, ctx context.Context, d *kafkabus.Driver, group string, attempts int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := d.Admin().FetchOffsets(ctx, group)
		if err == nil {
			found := false
			resp.Each(func(o kadm.OffsetResponse) {
				if strings.HasSuffix(o.Metadata, " "+strconv.Itoa(attempts)) {
					found = true
				}
			})
			if found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivered mark with %d attempts committed for group %s (last error %v)", attempts, group, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
