package redisbus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestCrashedMemberReclaimed: a member that dies holding 40 unacked
// messages (and those it read ahead) loses none of them: the other member
// of its group reclaims them after the ack wait and receives every message.
func TestCrashedMemberReclaimed(t *testing.T) {
	cfg := testConfig(t)
	cfg.AckWait = time.Second
	victim := openDriver(t, cfg)
	survivor := openDriver(t, cfg)
	pub := openDriver(t, cfg)
	dest := driver.NewDestination(driver.Event, "fault", "crash")
	opts := driver.SubscribeOptions{Group: "workers"}
	ctx := ctxFor(t, 60*time.Second)
	vsub, err := victim.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	const total, held = 200, 40
	msgs := make([]*driver.Message, total)
	for i := range msgs {
		msgs[i] = &driver.Message{ID: fmt.Sprintf("m%03d", i), Source: "fault-test", Type: "crash", Data: []byte{byte(i)}}
	}
	if err := pub.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	var taken int
	for taken < held {
		ds, err := vsub.Receive(ctx, held-taken)
		if err != nil {
			t.Fatal(err)
		}
		taken += len(ds)
	}
	// The process dies: its connection goes, nothing is acked or given back.
	if err := victim.Client().Close(); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	// What the victim read from Redis: what it handed out and what it read
	// ahead.
	pending, err := pub.Client().XPending(ctx, pub.StreamKey(dest), "workers").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count < held {
		t.Fatalf("%d entries pending after the crash, want at least the %d handed out", pending.Count, held)
	}
	ssub, err := survivor.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	reclaimed := 0
	for len(seen) < total {
		ds, err := ssub.Receive(ctx, 50)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(seen), total, err)
		}
		for _, d := range ds {
			seen[d.Message.ID]++
			if d.Attempt > 1 {
				reclaimed++
			}
		}
		if err := ssub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("victim held %d unacked (%d read from Redis); survivor received all %d (%d reclaimed with Attempt 2) %s after the crash; lost 0",
		taken, pending.Count, total, reclaimed, time.Since(crashed).Round(time.Millisecond))
	if int64(reclaimed) != pending.Count {
		t.Errorf("%d deliveries reclaimed, want the %d the victim held", reclaimed, pending.Count)
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s received %d times", id, n)
		}
	}
}
