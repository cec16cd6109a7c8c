package rabbitbus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
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
}

func (b *brokerChannel) deliver(tag uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unacked = append(b.unacked, tag)
}

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
	return nil
}

// TestAckerMatchesBroker settles random batches of deliveries, acks and
// requeues, from concurrent goroutines, while more arrive: every delivery
// must be settled exactly as asked, no frame may name a tag the broker no
// longer holds, and contiguous batches must take fewer frames than
// deliveries.
func TestAckerMatchesBroker(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		b := &brokerChannel{acked: map[uint64]bool{}}
		a := newAcker(b)
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
