package rabbitbus_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/rabbitnode"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// TestBrokerRestart restarts a RabbitMQ node of the test's own (its own
// port and data directory, never the shared broker) in the middle of
// confirmed publishes, with a consumer running: no confirmed message may be
// lost, publishers and the consumer must carry on by themselves, and the
// test logs the duplicates and how long recovery took. Before each restart
// the consumer pauses until over a thousand confirmed messages wait in the
// queue, so that the restart finds some on disk and some handed out but
// not acked.
//
// By default: 10,000 messages on a durable classic queue, the node killed
// (SIGKILL) once; the node's two starts take 5–10 s of the package's time.
// With EVENTBUS_SOAK set: 100,000 messages on classic and on quorum queues,
// three restarts each, alternately killed and stopped cleanly.
func TestBrokerRestart(t *testing.T) {
	total, restarts := 10_000, 1
	types := []rabbitbus.QueueType{rabbitbus.Classic}
	if os.Getenv("EVENTBUS_SOAK") != "" {
		total, restarts = 100_000, 3
		types = append(types, rabbitbus.Quorum)
	}
	began := time.Now()
	n := rabbitnode.Start(t)
	t.Logf("node started in %v", time.Since(began).Round(time.Millisecond))
	for _, qt := range types {
		t.Run(string(qt), func(t *testing.T) {
			restartDuringPublishes(t, n, qt, total, restarts)
		})
	}
}

func restartDuringPublishes(t *testing.T, n *rabbitnode.Node, qt rabbitbus.QueueType, total, restarts int) {
	ctx := ctxFor(t, 10*time.Minute)
	cfg := func() *rabbitbus.Config {
		return &rabbitbus.Config{URL: n.URL(), Options: rabbitbus.Options{Prefix: "fault-" + string(qt), QueueType: qt}}
	}
	pub, err := rabbitbus.Open(ctx, cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.WithoutCancel(ctx))
	sub, err := rabbitbus.Open(ctx, cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.WithoutCancel(ctx))
	dest := driver.NewDestination(driver.Event, "fault", "tick")
	s, err := sub.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true})
	if err != nil {
		t.Fatal(err)
	}

	// What the consumer saw, and when the node last came back.
	var (
		mu       sync.Mutex
		received = make([]int, total) // deliveries per message
		unique   int
		changed  = make(chan struct{}, 1)
		upAt     time.Time // zero while the node is down
		resumed  = make(chan time.Duration, restarts)
		// Set while the consumer must wait: before each restart, so that
		// the queue holds a backlog of confirmed messages when the node goes.
		gate atomic.Pointer[chan struct{}]
	)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for {
			if g := gate.Load(); g != nil {
				select {
				case <-*g:
				case <-ctx.Done():
					return
				}
			}
			ds, err := s.Receive(ctx, 64)
			if err != nil {
				if errors.Is(err, driver.ErrClosed) || ctx.Err() != nil {
					return
				}
				t.Errorf("Receive: %v", err)
				return
			}
			mu.Lock()
			if !upAt.IsZero() {
				resumed <- time.Since(upAt)
				upAt = time.Time{}
			}
			for _, d := range ds {
				i, err := strconv.Atoi(d.Message.ID)
				if d.Err != nil || err != nil || i < 0 || i >= total {
					t.Errorf("unexpected delivery %q: %v", d.Message.ID, d.Err)
					continue
				}
				if received[i]++; received[i] == 1 {
					unique++
				}
			}
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
			// An ack lost with its channel leaves the message to be
			// delivered again: a duplicate, counted above.
			_ = s.Ack(ctx, ds)
		}
	}()

	// Publishers: each message is published until confirmed.
	var (
		next, confirmed atomic.Int64
		failures        atomic.Int64
		firstErr        atomic.Pointer[error]
		acked           = make([]bool, total)
		progress        = make(chan struct{}, 1)
	)
	var pubs sync.WaitGroup
	for range 16 {
		pubs.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				m := &driver.Message{ID: strconv.Itoa(i), Source: "/fault", Type: "fault.tick", Data: []byte(strconv.Itoa(i))}
				for {
					pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					err := pub.Publish(pctx, dest, []*driver.Message{m})
					cancel()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						return
					}
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					select {
					case <-time.After(50 * time.Millisecond): // retry delay
					case <-ctx.Done():
						return
					}
				}
				acked[i] = true
				confirmed.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}

	// The restarts, each when a further share of the messages is confirmed
	// and the consumer has let a backlog build up in the queue.
	share := int64(total / (restarts + 2))
	for r := range restarts {
		at := share * int64(r+1)
		for i, want := range []int64{at, at + share/3} {
			if i == 1 {
				held := make(chan struct{})
				gate.Store(&held) // opened once the node is back; on failure the context ends the wait
			}
			for confirmed.Load() < want {
				select {
				case <-progress:
				case <-ctx.Done():
					t.Fatalf("%d of %d messages confirmed before restart %d", confirmed.Load(), total, r+1)
				}
			}
		}
		at = confirmed.Load()
		down := time.Now()
		how := "killed (SIGKILL)"
		if r%2 == 1 {
			how = "stopped (SIGTERM)"
			n.Stop()
		} else {
			n.Kill()
		}
		before := confirmed.Load()
		took := n.Start()
		back := time.Now()
		mu.Lock()
		upAt = back
		mu.Unlock()
		if g := gate.Swap(nil); g != nil {
			close(*g)
		}
		t.Logf("restart %d: node %s at %d confirmed, back after %v (start %v); %d confirmed meanwhile",
			r+1, how, at, time.Since(down).Round(time.Millisecond), took.Round(time.Millisecond), confirmed.Load()-before)
		for confirmed.Load() <= before+100 { // publishers confirm again
			select {
			case <-progress:
			case <-ctx.Done():
				t.Fatalf("publishers did not recover after restart %d: %d confirmed", r+1, confirmed.Load())
			}
		}
		t.Logf("restart %d: publishes confirmed again %v after the node was back",
			r+1, time.Since(back).Round(time.Millisecond))
		select {
		case d := <-resumed:
			t.Logf("restart %d: consumer received again %v after the node was back", r+1, d.Round(time.Millisecond))
		case <-ctx.Done():
			t.Fatalf("the consumer did not resume after restart %d", r+1)
		}
	}
	pubs.Wait()
	if ctx.Err() != nil {
		t.Fatalf("publishing: %v (%d of %d confirmed)", ctx.Err(), confirmed.Load(), total)
	}

	// Every confirmed message must arrive: wait until all did, or nothing
	// more arrived for 30 s.
	stall := time.NewTimer(30 * time.Second)
	defer stall.Stop()
wait:
	for {
		mu.Lock()
		done := unique == total
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
			stall.Reset(30 * time.Second)
		case <-stall.C:
			break wait
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Error(err)
	}
	<-consumed
	mu.Lock()
	defer mu.Unlock()
	var lost []int
	dups := 0
	for i, c := range received {
		if c == 0 && acked[i] {
			lost = append(lost, i)
		}
		if c > 1 {
			dups += c - 1
		}
	}
	errText := "none"
	if e := firstErr.Load(); e != nil {
		errText = (*e).Error()
	}
	t.Logf("%d messages confirmed, %d received, %d duplicates, %d lost; %d failed publish attempts (first: %s)",
		confirmed.Load(), unique, dups, len(lost), failures.Load(), errText)
	if len(lost) > 0 {
		t.Fatalf("%d confirmed messages lost, first ids %v", len(lost), lost[:min(len(lost), 10)])
	}
}
