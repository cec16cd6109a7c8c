package awsbus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// stalledCall is a batch call that never answers until released or its
// context ends, as a server that accepts and never replies.
type stalledCall struct {
	ctx  context.Context
	msgs []*driver.Message
}

// TestCombinerRunnerReturnsWhenItsContextEnds: the caller whose Publish
// starts a combined batch call returns its context's error at once when
// its context ends during the call, although the call goes on for another
// caller in the same batch, which then gets the call's outcome; every call
// goroutine ends when its call returns.
func TestCombinerRunnerReturnsWhenItsContextEnds(t *testing.T) {
	calls := make(chan stalledCall, maxCombinedCalls)
	release := make(chan struct{})
	c := newCombiner(10, func(ctx context.Context, msgs []*driver.Message, _ []*wireMessage) error {
		calls <- stalledCall{ctx, msgs}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	msgs := func(prefix string, n int) ([]*driver.Message, []*wireMessage) {
		ms := make([]*driver.Message, n)
		ws := make([]*wireMessage, n)
		for i := range ms {
			ms[i] = &driver.Message{ID: fmt.Sprintf("%s-%d", prefix, i)}
			ws[i] = &wireMessage{body: "x"}
		}
		return ms, ws
	}
	publish := func(ctx context.Context, prefix string, n int) chan error {
		done := make(chan error, 1)
		ms, ws := msgs(prefix, n)
		go func() { done <- c.publish(ctx, ms, ws) }()
		return done
	}
	const bound = 30 * time.Second
	nextCall := func() stalledCall {
		t.Helper()
		select {
		case call := <-calls:
			return call
		case <-time.After(bound):
			t.Fatal("no batch call started")
			return stalledCall{}
		}
	}
	// Two calls in flight (eagerCalls): the next callers wait, and the one
	// that fills a batch starts its call with those waiting.
	first := publish(context.Background(), "x", 1)
	second := publish(context.Background(), "y", 1)
	nextCall()
	nextCall()
	waiting := publish(context.Background(), "a", 1)
	for deadline := time.Now().Add(bound); ; {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the third caller is not waiting")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runner := publish(ctx, "b", 9)
	call := nextCall()
	if len(call.msgs) != 10 || call.msgs[0].ID != "a-0" || call.msgs[1].ID != "b-0" {
		t.Fatalf("the combined call sends %d messages, want a-0 then b-0..b-8", len(call.msgs))
	}
	cancel()
	select {
	case err := <-runner:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the runner returned %v, want context.Canceled", err)
		}
	case <-time.After(bound):
		t.Fatal("the runner did not return when its context ended during the call")
	}
	if call.ctx.Err() != nil {
		t.Fatal("the call was cancelled while another caller's context lives")
	}
	close(release)
	for name, done := range map[string]chan error{"first": first, "second": second, "waiting": waiting} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s caller: %v", name, err)
			}
		case <-time.After(bound):
			t.Fatalf("%s caller did not return after the calls did", name)
		}
	}
	// Every call goroutine ends: the combiner has no call in flight.
	for deadline := time.Now().Add(bound); ; {
		c.mu.Lock()
		n := c.inflight
		c.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still in flight", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseWaitsForBatchCalls: Driver.Close returns only after the batch
// calls that combiners run for waiting callers have returned; when its
// context ends first, it cancels them, still returns only once they have,
// and reports its context's error. A call that would start after Close
// fails with ErrClosed instead.
func TestCloseWaitsForBatchCalls(t *testing.T) {
	const bound = 30 * time.Second
	type outcome struct {
		err        error
		callsEnded bool // when Close returned
	}
	run := func(t *testing.T, closeCtx context.Context, release chan struct{}) (outcome, error) {
		t.Helper()
		d := &Driver{subs: make(map[*subscription]struct{}), calls: newCallGroup()}
		started, ended := make(chan struct{}), make(chan struct{})
		c := d.combinerFor("topic", 10, func(ctx context.Context, _ []*driver.Message, _ []*wireMessage) error {
			defer close(ended)
			close(started)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		published := make(chan error, 1)
		go func() {
			published <- c.publish(context.Background(), []*driver.Message{{ID: "m"}}, []*wireMessage{{body: "x"}})
		}()
		select {
		case <-started:
		case <-time.After(bound):
			t.Fatal("no batch call started")
		}
		closed := make(chan outcome, 1)
		go func() {
			err := d.Close(closeCtx)
			o := outcome{err: err}
			select {
			case <-ended:
				o.callsEnded = true
			default:
			}
			closed <- o
		}()
		for deadline := time.Now().Add(bound); !d.isClosed(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("Close did not begin")
			}
		}
		if release != nil {
			select {
			case o := <-closed:
				t.Fatalf("Close returned (%v) while a batch call runs", o.err)
			default:
			}
			close(release)
		}
		var o outcome
		select {
		case o = <-closed:
		case <-time.After(bound):
			t.Fatal("Close did not return")
		}
		var perr error
		select {
		case perr = <-published:
		case <-time.After(bound):
			t.Fatal("the publisher did not return")
		}
		if err := c.publish(context.Background(), []*driver.Message{{ID: "late"}}, []*wireMessage{{body: "x"}}); !errors.Is(err, driver.ErrClosed) {
			t.Errorf("publish after Close: %v, want ErrClosed", err)
		}
		return o, perr
	}

	t.Run("waits", func(t *testing.T) {
		o, perr := run(t, context.Background(), make(chan struct{}))
		if o.err != nil || !o.callsEnded {
			t.Errorf("Close returned %v, batch call ended before: %v; want nil, true", o.err, o.callsEnded)
		}
		if perr != nil {
			t.Errorf("publisher: %v", perr)
		}
	})
	t.Run("cancels when its context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		o, perr := run(t, ctx, nil)
		if !errors.Is(o.err, context.DeadlineExceeded) || !o.callsEnded {
			t.Errorf("Close returned %v, batch call ended before: %v; want DeadlineExceeded, true", o.err, o.callsEnded)
		}
		if !errors.Is(perr, context.Canceled) {
			t.Errorf("publisher: %v, want the cancelled call's error", perr)
		}
	})
}
