package drivertest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testLoad publishes 10,000 messages from 8 concurrent publishers, in single
// and batched Publish calls, to a group of two members, and counts what
// arrives: nothing may be lost.
func (s *suite) testLoad(t *testing.T) {
	const (
		publishers = 8
		perPub     = 1250
		total      = publishers * perPub
		batch      = 25
		// loadTimeout is generous: a real broker under the race detector on
		// two shared cores.
		loadTimeout = 60 * time.Second
		// stallTimeout ends the wait when nothing arrived for that long.
		stallTimeout = 5 * time.Second
	)
	dst := dest(s.groupPattern(t), "load")
	run := unique()
	opts := driver.SubscribeOptions{Group: s.group()}
	// The first member receives from two goroutines at once.
	first := subscribe(t, s.open(t), dst, opts)
	members := []*consumer{startConsumer(t, first, 100), startConsumer(t, first, 100)}
	if s.caps.ConsumerGroups {
		members = append(members, startConsumer(t, subscribe(t, s.open(t), dst, opts), 100))
	}

	conns := []driver.Driver{s.open(t), s.open(t)}
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			pub := conns[p%len(conns)]
			msgs := make([]*driver.Message, perPub)
			for i := range msgs {
				id := loadID(run, p, i)
				msgs[i] = &driver.Message{ID: id, Source: "/drivertest", Type: "drivertest.load", Data: []byte(id)}
			}
			// Alternate a batch of 25 in one call with 25 single calls.
			for i := 0; i < perPub; i += batch {
				chunk := msgs[i:min(i+batch, perPub)]
				if (i/batch)%2 == 0 {
					if err := publishNow(pub, dst, chunk...); err != nil {
						t.Errorf("publisher %d: Publish of %d: %v", p, len(chunk), err)
						return
					}
					continue
				}
				for _, m := range chunk {
					if err := publishNow(pub, dst, m); err != nil {
						t.Errorf("publisher %d: Publish %q: %v", p, m.ID, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	if t.Failed() {
		return
	}

	count := func() int {
		n := 0
		for _, c := range members {
			c.mu.Lock()
			n += len(c.got)
			c.mu.Unlock()
		}
		return n
	}
	distinct := func() int {
		ids := make(map[string]struct{}, total)
		for _, c := range members {
			c.mu.Lock()
			for _, d := range c.got {
				ids[d.Message.ID] = struct{}{}
			}
			c.mu.Unlock()
		}
		return len(ids)
	}
	// Counting with duplicates is cheap; distinct ids only once that is
	// reached. A lost message shows as a stall, long before loadTimeout.
	last, lastChange := 0, time.Now()
	waitUntil(loadTimeout, func() bool {
		n := count()
		if n != last {
			last, lastChange = n, time.Now()
		}
		return n >= total && distinct() >= total || time.Since(lastChange) > stallTimeout
	})
	consumed := time.Since(start)
	time.Sleep(quietWindow)

	seen := make(map[string]int, total)
	var changed []string
	for i, c := range members {
		ds := c.deliveries()
		t.Logf("consumer %d received %d deliveries", i, len(ds))
		for _, d := range ds {
			seen[d.Message.ID]++
			if !bytes.Equal(d.Message.Data, []byte(d.Message.ID)) {
				changed = append(changed, d.Message.ID)
			}
		}
	}
	if len(changed) > 0 {
		t.Errorf("%d messages arrived with Data that is not their id: %s", len(changed), sample(changed))
	}
	var missing []string
	for p := range publishers {
		for i := range perPub {
			if id := loadID(run, p, i); seen[id] == 0 {
				missing = append(missing, id)
			}
		}
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("%d messages published in %s, received in %s; %d duplicate deliveries",
		total, published.Round(time.Millisecond), consumed.Round(time.Millisecond), dups)
	if unexpected := len(seen) - (total - len(missing)); unexpected > 0 {
		t.Errorf("received %d messages that were not published", unexpected)
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d messages lost: %s", len(missing), total, sample(missing))
	}
	if dups > 0 && !s.caps.Redelivery {
		t.Errorf("%d duplicate deliveries from a driver that does not claim Redelivery", dups)
	}
}

// publishNow publishes with a timeout of its own, for loops too long to give
// each call a context that lives until the test ends.
func publishNow(d driver.Driver, dst driver.Destination, msgs ...*driver.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return d.Publish(ctx, dst, msgs)
}

// loadID is the id of publisher p's i-th message in the run.
func loadID(run string, p, i int) string { return fmt.Sprintf("load-%s-%d-%d", run, p, i) }
