package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/redisbus"
	"github.com/redis/go-redis/v9"
)

// TestStreamOrderAcrossMembers: three members of a group compete for a
// stream while two publishers publish six keys; the member that reads
// closes after a third of the messages, then the next one: every key's
// messages are handled in publish order, each once, across the changes of
// reader.
func TestStreamOrderAcrossMembers(t *testing.T) {
	cfg := testConfig(t)
	cfg.AckWait = 3 * time.Second
	cfg.ReclaimInterval = 100 * time.Millisecond
	dest := driver.NewDestination(driver.Stream, "order", "")
	opts := driver.SubscribeOptions{Group: "g"}
	ctx := ctxFor(t, 90*time.Second)

	const members, keys, perKey = 3, 6, 100
	const total = keys * perKey
	subs := make([]driver.Subscription, members)
	for i := range subs {
		sub, err := openDriver(t, cfg).Subscribe(ctx, dest, opts)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}

	type handled struct {
		member   int
		key      string
		seq      int
		msgID    string
		attempts int
	}
	var (
		mu      sync.Mutex
		log     []handled
		seen    = map[string]bool{}
		closed  int
		allSeen = make(chan struct{})
		seenAll sync.Once
	)
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			for {
				ds, err := sub.Receive(ctx, 16)
				if errors.Is(err, driver.ErrClosed) || ctx.Err() != nil {
					return
				}
				if err != nil {
					t.Errorf("member %d: %v", i, err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					var seq int
					if _, err := fmt.Sscanf(string(d.Message.Data), "%d", &seq); err != nil {
						t.Errorf("member %d: data %q: %v", i, d.Message.Data, err)
					}
					log = append(log, handled{i, d.Message.Key, seq, d.Message.ID, d.Attempt})
					seen[d.Message.ID] = true
				}
				n := len(seen)
				// The reader leaves after each third of the messages, at a
				// batch boundary, having acked what it handled.
				leave := closed < members-1 && n >= (closed+1)*total/members
				if leave {
					closed++
				}
				last := n == total
				mu.Unlock()
				if err := sub.Ack(ctx, ds); err != nil {
					t.Errorf("member %d: ack: %v", i, err)
				}
				if last {
					// Only now may the test close the subscriptions.
					seenAll.Do(func() { close(allSeen) })
				}
				if leave {
					if err := sub.Close(ctx); err != nil {
						t.Errorf("member %d: close: %v", i, err)
					}
					return
				}
			}
		})
	}

	// Two publishers, three keys each, in batches of 1 to 7.
	pub := openDriver(t, cfg)
	var pwg sync.WaitGroup
	for p := range 2 {
		pwg.Go(func() {
			var batch []*driver.Message
			for seq := range perKey {
				for k := p * keys / 2; k < (p+1)*keys/2; k++ {
					key := fmt.Sprintf("key%d", k)
					batch = append(batch, &driver.Message{ID: fmt.Sprintf("%s-%d", key, seq), Source: "order-test",
						Type: "order", Key: key, Data: fmt.Appendf(nil, "%d", seq)})
					if len(batch) >= 1+(seq+k)%7 {
						if err := pub.Publish(ctx, dest, batch); err != nil {
							t.Error(err)
							return
						}
						batch = nil
					}
				}
			}
			if len(batch) > 0 {
				if err := pub.Publish(ctx, dest, batch); err != nil {
					t.Error(err)
				}
			}
		})
	}
	pwg.Wait()
	select {
	case <-allSeen:
	case <-ctx.Done():
		mu.Lock()
		t.Errorf("%d of %d messages handled before the deadline", len(seen), total)
		mu.Unlock()
	}
	for _, sub := range subs {
		_ = sub.Close(ctx)
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	next := map[string]int{}
	readers := map[int]int{}
	var problems []string
	for _, h := range log {
		readers[h.member]++
		if h.seq != next[h.key] {
			problems = append(problems, fmt.Sprintf("%s #%d (member %d, attempt %d) where #%d was next", h.key, h.seq, h.member, h.attempts, next[h.key]))
		}
		next[h.key] = h.seq + 1
	}
	t.Logf("%d messages handled by %d readers in turn %v", len(log), len(readers), readers)
	if len(problems) > 0 {
		t.Errorf("%d messages out of their key's order, or twice: %v", len(problems), problems[:min(len(problems), 10)])
	}
	if len(log) != total {
		t.Errorf("%d deliveries handled, want %d", len(log), total)
	}
	if len(readers) != members {
		t.Errorf("%d members read, want each of the %d in turn", len(readers), members)
	}
}

// TestStreamOrderAfterReaderDies: the reader of a stream's group dies
// (its connection closed under it) holding a batch it did not ack and what
// it read ahead; the member standing by takes over once the lease expires
// and handles every message the reader did not ack, each key in publish
// order, the unacked batch first (Attempt 2).
func TestStreamOrderAfterReaderDies(t *testing.T) {
	cfg := testConfig(t)
	cfg.AckWait = 2 * time.Second
	cfg.ReclaimInterval = 100 * time.Millisecond
	dest := driver.NewDestination(driver.Stream, "order", "crash")
	opts := driver.SubscribeOptions{Group: "g", StartAt: driver.StartFirst}
	ctx := ctxFor(t, 90*time.Second)

	const keys, perKey = 3, 100
	pub := openDriver(t, cfg)
	var msgs []*driver.Message
	for seq := range perKey {
		for k := range keys {
			key := fmt.Sprintf("key%d", k)
			msgs = append(msgs, &driver.Message{ID: fmt.Sprintf("%s-%d", key, seq), Source: "order-test",
				Type: "order", Key: key, Data: fmt.Appendf(nil, "%d", seq)})
		}
	}
	if err := pub.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}

	next := map[string]int{}
	check := func(who string, ds []*driver.Delivery) {
		for _, d := range ds {
			var seq int
			if _, err := fmt.Sscanf(string(d.Message.Data), "%d", &seq); err != nil {
				t.Fatalf("%s: data %q: %v", who, d.Message.Data, err)
			}
			if seq != next[d.Message.Key] {
				t.Errorf("%s: %s #%d (attempt %d) where #%d was next", who, d.Message.Key, seq, d.Attempt, next[d.Message.Key])
			}
			next[d.Message.Key] = seq + 1
		}
	}
	victim := openDriver(t, cfg)
	vsub, err := victim.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	handled := 0
	var acked []string
	for handled < 100 {
		ds, err := vsub.Receive(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		check("reader", ds)
		handled += len(ds)
		if err := vsub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			acked = append(acked, *d.Handle.(*string))
		}
	}
	// Ack returns before Redis has the XACK; one still under way when the
	// process dies is lost, and its messages are delivered again (at least
	// once). This test is about order across the change of reader, so the
	// reader dies only once Redis has every ack it sent.
	awaitAcked(ctx, t, pub, dest, "g", acked)
	survivor := openDriver(t, cfg)
	ssub, err := survivor.Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The reader takes one more batch and dies before it handles it.
	lost, err := vsub.Receive(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.Client().Close(); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	redelivered, first := 0, time.Duration(0)
	for handled < keys*perKey {
		ds, err := ssub.Receive(ctx, 50)
		if err != nil {
			t.Fatalf("after %d of %d: %v", handled, keys*perKey, err)
		}
		if first == 0 {
			first = time.Since(died)
		}
		for _, d := range ds {
			if d.Attempt > 1 {
				redelivered++
			}
		}
		check("survivor", ds)
		handled += len(ds)
		if err := ssub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("the survivor read first %s after the reader died; %d redelivered (the reader held %d unacked)",
		first.Round(time.Millisecond), redelivered, len(lost))
	if redelivered < len(lost) {
		t.Errorf("%d redelivered, want at least the %d the reader held", redelivered, len(lost))
	}
}

// awaitAcked waits until none of ids is pending in group.
func awaitAcked(ctx context.Context, t *testing.T, d *redisbus.Driver, dest driver.Destination, group string, ids []string) {
	t.Helper()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		pending, err := d.Client().XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: d.StreamKey(dest), Group: group, Start: "-", End: "+", Count: 10000}).Result()
		if err != nil {
			t.Fatalf("XPENDING: %v", err)
		}
		left := 0
		for _, p := range pending {
			if want[p.ID] {
				left++
			}
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d acked messages still pending after 30s", left)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
