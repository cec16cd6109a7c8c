package natsbus

import (
	"context"
	"fmt"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// flusher lets concurrent core NATS publishers share flushes: each flush is a
// PING/PONG round trip and a write to the socket, so one per Publish would
// bound the publish rate by the round trip. A publisher registers after
// writing its messages and waits for the next flush that starts after that,
// which guarantees the server has its messages when the flush completes.
// One goroutine, started by start and ended by stop, runs the flushes one
// at a time.
type flusher struct {
	d    *Driver
	kick chan struct{} // a round is waiting to start

	mu   sync.Mutex
	next *flushRound // waiters for a flush not yet started; nil: none

	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	ended  chan struct{} // closed when the goroutine returned
}

// flushRound is one flush and the publishers waiting for it.
type flushRound struct {
	done chan struct{}
	err  error // set before done is closed
}

func (f *flusher) start(d *Driver) {
	f.d = d
	f.kick = make(chan struct{}, 1)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.ended = make(chan struct{})
	go f.run()
}

// stop ends the goroutine, failing the publishers still waiting, and waits
// for it within ctx.
func (f *flusher) stop(ctx context.Context) {
	if f.cancel == nil {
		return
	}
	f.cancel()
	select {
	case <-f.ended:
	case <-ctx.Done():
	}
}

// wait returns once a flush that started after the call completed, with its
// error.
func (f *flusher) wait(ctx context.Context) error {
	f.mu.Lock()
	r := f.next
	if r == nil {
		r = &flushRound{done: make(chan struct{})}
		f.next = r
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default: // a kick is already pending; it will take this round
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("flush: %w: %w", driver.ErrUnavailable, ctx.Err())
	}
}

func (f *flusher) run() {
	defer close(f.ended)
	for {
		select {
		case <-f.kick:
		case <-f.ctx.Done():
			f.mu.Lock()
			r := f.next
			f.next = nil
			f.mu.Unlock()
			if r != nil {
				r.err = fmt.Errorf("flush: %w", driver.ErrClosed)
				close(r.done)
			}
			return
		}
		f.mu.Lock()
		r := f.next
		f.next = nil
		f.mu.Unlock()
		if r == nil {
			continue
		}
		r.err = f.d.flush(f.ctx)
		close(r.done)
	}
}
