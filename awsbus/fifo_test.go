package awsbus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestFIFO publishes events on FIFO topics: each key's messages arrive in
// order, and a message published twice (same source and id) is delivered
// once, with no error to the publisher (SQS drops it silently, so
// driver.ErrDuplicate is not observable).
//
// fauxqs returns one message per group per ReceiveMessage call (AWS returns
// up to ten of a group); with three keys, each receive brings at most three.
func TestFIFO(t *testing.T) {
	cfg := testConfig(t)
	cfg.FIFO = true
	pub := openDriver(t, cfg)
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 60*time.Second)
	dest := driver.NewDestination(driver.Event, "fifo", "test")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)

	const keys, perKey = 3, 12
	var msgs []*driver.Message
	for i := range keys * perKey {
		msgs = append(msgs, &driver.Message{
			ID: fmt.Sprintf("m-%d", i), Source: "/fifo", Type: "fifo.test",
			Key: fmt.Sprintf("k%d", i%keys), Data: []byte(fmt.Sprint(i / keys)),
		})
	}
	for i := 0; i < len(msgs); i += 11 { // batches that cross SNS's ten
		if err := pub.Publish(ctx, dest, msgs[i:min(i+11, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(ctx, dest, []*driver.Message{msgs[0].Clone()}); err != nil {
		t.Fatalf("republishing a message: %v, want nil (SQS de-duplicates silently)", err)
	}

	next := map[string]int{}
	seen := map[string]int{}
	for len(seen) < len(msgs) {
		ds, err := sub.Receive(ctx, 10)
		if err != nil {
			t.Fatalf("received %d of %d: %v", len(seen), len(msgs), err)
		}
		for _, dl := range ds {
			m := dl.Message
			seen[m.ID]++
			if want := fmt.Sprint(next[m.Key]); string(m.Data) != want {
				t.Errorf("key %s: got message %s, want %s", m.Key, m.Data, want)
			}
			next[m.Key]++
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	quiet := ctxFor(t, 1500*time.Millisecond)
	if ds, err := sub.Receive(quiet, 10); err == nil {
		t.Errorf("received %s again: the duplicate publish was delivered", ds[0].Message.ID)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}
