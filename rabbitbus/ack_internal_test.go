package rabbitbus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// brokerChannel models the broker's side of a consumer channel: the
// unsettled deliveries in tag order, and the PRECONDITION_FAILED the broker
// closes the channel with when a settlement names an unknown tag.
type brokerChannel struct {
	mu      sync.Mutex
	unacked []uint64
	frames  int
	acked   map[uint64]bool
	err     error
	drained chan struct{} // if set, closed once a settlement leaves nothing unsettled
}

func (b *brokerChannel) deliver(tag uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unacked = append(b.unacked, tag)
}

func (b *brokerChannel) IsClosed() bool { return false }

func (b *brokerChannel) Ack(tag uint64, multiple bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.settle(tag, multiple, true)
}

func (b *brokerChannel) Nack(tag uint64, multiple, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.settle(tag, multiple, false)
}

func (b *brokerChannel) settle(tag uint64, multiple, ack bool) error {
	b.frames++
	i := slices.Index(b.unacked, tag)
	if i < 0 {
		if b.err == nil {
			b.err = fmt.Errorf("PRECONDITION_FAILED - unknown delivery tag %d", tag)
		}
		return b.err
	}
	first := i
	if multiple {
		first = 0
	}
	for _, t := range b.unacked[first : i+1] {
		b.acked[t] = ack
	}
	b.unacked = slices.Delete(b.unacked, first, i+1)
	if len(b.unacked) == 0 && b.drained != nil {
		close(b.drained)
		b.drained = nil
	}
	return nil
}

// TestAckerMatchesBroker settles random batches of deliveries, acks and
// requeues, from concurrent goroutines, while more arrive: every delivery
// must be settled exactly as asked, no frame may name a tag the broker no
// longer holds, and contiguous batches must take fewer frames than
// deliveries.
func TestAckerMatchesBroker(t *testing.T) {
	t.Run("at once", func(t *testing.T) { testAckerMatchesBroker(t, 0) })
	t.Run("coalesced", func(t *testing.T) { testAckerMatchesBroker(t, 50*time.Microsecond) })
}

func testAckerMatchesBroker(t *testing.T, delay time.Duration) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		b := &brokerChannel{acked: map[uint64]bool{}}
		a := newAcker(b, 64, delay, func(err error) { t.Errorf("coalesced ack: %v", err) })
		const total = 2000
		want := map[uint64]bool{}
		var pending []uint64 // received, not yet settled
		var tag uint64
		var wg sync.WaitGroup
		for tag < total || len(pending) > 0 {
			// The broker delivers up to a prefetch of 64 ahead.
			for tag < total && len(pending) < 64 {
				tag++
				b.deliver(tag)
				a.received(tag)
				pending = append(pending, tag)
			}
			// A batch of settlements: usually a prefix (handlers finished
			// in order), sometimes a random subset.
			n := 1 + rng.IntN(len(pending))
			if rng.IntN(3) == 0 {
				rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
			}
			batch := slices.Clone(pending[:n])
			pending = pending[n:]
			slices.Sort(pending)
			requeue := rng.IntN(10) == 0
			for _, t := range batch {
				want[t] = !requeue
			}
			wg.Go(func() {
				if requeue {
					for _, t := range batch {
						_ = a.requeue(t) // a failure is in b.err
					}
					return
				}
				_ = a.ack(batch) // a failure is in b.err
			})
			if rng.IntN(2) == 0 {
				wg.Wait()
			}
		}
		wg.Wait()
		if err := a.flush(); err != nil {
			t.Fatalf("seed %d: flush: %v", seed, err)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.err != nil {
			t.Fatalf("seed %d: %v", seed, b.err)
		}
		if len(b.unacked) != 0 {
			t.Fatalf("seed %d: %d deliveries left unsettled", seed, len(b.unacked))
		}
		for tg, ack := range want {
			if got, ok := b.acked[tg]; !ok || got != ack {
				t.Fatalf("seed %d: tag %d settled %v (present %v), want ack=%v", seed, tg, got, ok, ack)
			}
		}
		if b.frames >= total {
			t.Errorf("seed %d: %d frames for %d deliveries", seed, b.frames, total)
		}
	}
}

// TestAckerCoalesces: the first ack goes at once; acks made one by one, in
// order, right after it wait and then go as one multiple frame; an ack left
// waiting goes once the delay passed, without another call.
func TestAckerCoalesces(t *testing.T) {
	b := &brokerChannel{acked: map[uint64]bool{}}
	a := newAcker(b, 256, time.Hour, func(err error) { t.Errorf("coalesced ack: %v", err) })
	b.deliver(1)
	a.received(1)
	if err := a.ack([]uint64{1}); err != nil {
		t.Fatal(err)
	}
	if b.frames != 1 {
		t.Fatalf("the first ack took %d frames, want 1 at once", b.frames)
	}
	b.frames = 0
	for tag := uint64(2); tag <= 11; tag++ {
		b.deliver(tag)
		a.received(tag)
		if err := a.ack([]uint64{tag}); err != nil {
			t.Fatal(err)
		}
	}
	if b.frames != 0 {
		t.Fatalf("%d frames sent before the delay", b.frames)
	}
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	if b.frames != 1 || len(b.unacked) != 0 {
		t.Fatalf("%d frames for 10 acks in order, %d left unacked; want 1 and 0", b.frames, len(b.unacked))
	}

	b = &brokerChannel{acked: map[uint64]bool{}, drained: make(chan struct{})}
	a = newAcker(b, 256, 50*time.Millisecond, func(err error) { t.Errorf("coalesced ack: %v", err) })
	defer a.flush()
	drained := b.drained
	for tag := uint64(1); tag <= 2; tag++ {
		b.deliver(tag)
		a.received(tag)
	}
	for tag := uint64(1); tag <= 2; tag++ {
		if err := a.ack([]uint64{tag}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the ack was not sent within 10 s")
	}
}
