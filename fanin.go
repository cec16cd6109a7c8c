package eventbus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// fanIn merges the subscriptions of one destination on several backends
// (the main one and those content routes send some of its messages to) into
// one driver.Subscription. One goroutine per backend receives; settlements
// go back to the subscription each delivery came from.
type fanIn struct {
	subs   []driver.Subscription
	in     chan fanBatch
	stop   context.CancelFunc
	pumps  sync.WaitGroup
	ended  chan struct{} // closed when every pump returned
	closed chan struct{}

	recvMu  sync.Mutex
	pending []*driver.Delivery // received from a pump, not handed out yet

	mu     sync.Mutex
	origin map[*driver.Delivery]int

	closeOnce sync.Once
	closeErr  error
}

type fanBatch struct {
	ds  []*driver.Delivery
	err error
}

func newFanIn(subs []driver.Subscription) *fanIn {
	ctx, stop := context.WithCancel(context.Background())
	f := &fanIn{
		subs:   subs,
		in:     make(chan fanBatch),
		stop:   stop,
		ended:  make(chan struct{}),
		closed: make(chan struct{}),
		origin: map[*driver.Delivery]int{},
	}
	for i, s := range subs {
		f.pumps.Add(1)
		go f.pump(ctx, i, s)
	}
	go func() {
		f.pumps.Wait()
		close(f.ended)
	}()
	return f
}

func (f *fanIn) pump(ctx context.Context, i int, s driver.Subscription) {
	defer f.pumps.Done()
	failures := 0
	for {
		ds, err := s.Receive(ctx, receiveBatch)
		if ctx.Err() != nil || errors.Is(err, driver.ErrClosed) {
			if len(ds) > 0 {
				_ = s.Nack(context.WithoutCancel(ctx), ds, 0)
			}
			return
		}
		if err == nil {
			failures = 0
			f.mu.Lock()
			for _, d := range ds {
				f.origin[d] = i
			}
			f.mu.Unlock()
		}
		select {
		case f.in <- fanBatch{ds: ds, err: err}:
		case <-ctx.Done():
			if len(ds) > 0 {
				f.forget(ds)
				_ = s.Nack(context.WithoutCancel(ctx), ds, 0)
			}
			return
		}
		if err != nil {
			// The consumer pauses on the error it was handed; so does the
			// pump, so that an outage does not spin.
			failures++
			t := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 5*time.Second))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

func (f *fanIn) forget(ds []*driver.Delivery) {
	f.mu.Lock()
	for _, d := range ds {
		delete(f.origin, d)
	}
	f.mu.Unlock()
}

func (f *fanIn) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	f.recvMu.Lock()
	defer f.recvMu.Unlock()
	if len(f.pending) == 0 {
		select {
		case b := <-f.in:
			if b.err != nil {
				return nil, b.err
			}
			f.pending = b.ds
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.closed:
			return nil, driver.ErrClosed
		case <-f.ended:
			return nil, driver.ErrClosed
		}
	}
	n := min(max, len(f.pending))
	if n <= 0 {
		n = len(f.pending)
	}
	out := make([]*driver.Delivery, n)
	copy(out, f.pending)
	f.pending = f.pending[n:]
	return out, nil
}

// bySource splits ds by the subscription they came from.
func (f *fanIn) bySource(ds []*driver.Delivery) map[int][]*driver.Delivery {
	groups := make(map[int][]*driver.Delivery, len(f.subs))
	f.mu.Lock()
	for _, d := range ds {
		i := f.origin[d]
		delete(f.origin, d)
		groups[i] = append(groups[i], d)
	}
	f.mu.Unlock()
	return groups
}

func (f *fanIn) settle(ds []*driver.Delivery, fn func(driver.Subscription, []*driver.Delivery) error) error {
	var errs []error
	for i, g := range f.bySource(ds) {
		if err := fn(f.subs[i], g); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *fanIn) Ack(ctx context.Context, ds []*driver.Delivery) error {
	return f.settle(ds, func(s driver.Subscription, g []*driver.Delivery) error { return s.Ack(ctx, g) })
}

func (f *fanIn) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	return f.settle(ds, func(s driver.Subscription, g []*driver.Delivery) error { return s.Nack(ctx, g, delay) })
}

func (f *fanIn) Term(ctx context.Context, ds []*driver.Delivery) error {
	return f.settle(ds, func(s driver.Subscription, g []*driver.Delivery) error { return s.Term(ctx, g) })
}

// Close stops the pumps, gives back what they received and was not handed
// out, and closes every subscription.
func (f *fanIn) Close(ctx context.Context) error {
	f.closeOnce.Do(func() {
		close(f.closed)
		f.stop()
		f.pumps.Wait()
		f.recvMu.Lock()
		rest := f.pending
		f.pending = nil
		f.recvMu.Unlock()
		var errs []error
		if len(rest) > 0 {
			if err := f.Nack(ctx, rest, 0); err != nil {
				errs = append(errs, err)
			}
		}
		for _, s := range f.subs {
			if err := s.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
				errs = append(errs, err)
			}
		}
		f.closeErr = errors.Join(errs...)
	})
	if f.closeErr != nil {
		return f.closeErr
	}
	return nil
}
