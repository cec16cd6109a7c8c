package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

func (s *suite) testClose(t *testing.T) {
	t.Run("SubscriptionCloseUnblocksReceive", s.testSubscriptionCloseUnblocksReceive)
	t.Run("DriverCloseUnblocksReceive", s.testDriverCloseUnblocksReceive)
	t.Run("UseAfterClose", s.testUseAfterClose)
	t.Run("ContextEndsReceive", s.testContextEndsReceive)
	t.Run("DeadlineKept", s.testCloseDeadlineKept)
}

// closeDeadline is the context deadline of the closes that
// testCloseDeadlineKept times.
const closeDeadline = 100 * time.Millisecond

// testCloseDeadlineKept checks that Subscription.Close and Driver.Close,
// with deliveries unsettled and a Receive blocked, return within promptly of
// their context's deadline, and that with a context that ended already they
// still close.
func (s *suite) testCloseDeadlineKept(t *testing.T) {
	p := s.anyPattern(t)
	pub := s.open(t)

	// holding opens a subscription on a new connection that holds an
	// unsettled delivery, with a Receive blocked on it.
	holding := func() (driver.Driver, driver.Subscription, <-chan receiveResult) {
		t.Helper()
		dst := dest(p, "closedeadline")
		d := s.open(t)
		sub := subscribe(t, d, dst, driver.SubscribeOptions{Group: s.group()})
		publish(t, pub, dst, newMessage("held-at-close"))
		receiveOne(t, sub)
		return d, sub, receiveAsync(t, timeout(t, deliveryTimeout), sub)
	}
	timed := func(what string, ctx context.Context, closeFn func(context.Context) error) {
		t.Helper()
		errc := make(chan error, 1)
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			errc <- closeFn(ctx)
		}()
		deadline, _ := ctx.Deadline()
		bound := max(time.Until(deadline), 0) + promptly
		select {
		case err := <-errc:
			took := time.Since(start)
			t.Logf("%s returned after %s: %v", what, took.Round(time.Millisecond), err)
			if err != nil && !errors.Is(err, driver.ErrClosed) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v, want nil, driver.ErrClosed or the context's error", what, err)
			}
		case <-time.After(bound):
			t.Errorf("%s did not return within %s of its context's deadline", what, promptly)
			waitStopped(t, done, what)
		}
	}
	// What a Close returns when its context ended, the subscription or the
	// connection is closed all the same.
	closedAfter := func(what string, sub driver.Subscription, res <-chan receiveResult) {
		t.Helper()
		expectUnblocked(t, res, driver.ErrClosed, what+" returned")
		if _, err := sub.Receive(timeout(t, promptly), 1); !errors.Is(err, driver.ErrClosed) {
			t.Errorf("Receive after %s returned: %v, want an error matching driver.ErrClosed", what, err)
		}
	}

	withDeadline := func() context.Context { return timeout(t, closeDeadline) }
	ended, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()

	_, sub, res := holding()
	timed("Subscription.Close", withDeadline(), sub.Close)
	closedAfter("Subscription.Close", sub, res)

	d, sub, res := holding()
	timed("Driver.Close", withDeadline(), d.Close)
	closedAfter("Driver.Close", sub, res)

	_, sub, res = holding()
	timed("Subscription.Close with a context that ended", ended, sub.Close)
	closedAfter("Subscription.Close with a context that ended", sub, res)

	d, sub, res = holding()
	timed("Driver.Close with a context that ended", ended, d.Close)
	closedAfter("Driver.Close with a context that ended", sub, res)
	if err := d.Publish(timeout(t, promptly), dest(p, "closedeadline"), []*driver.Message{newMessage("after-close")}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Publish after Driver.Close with a context that ended: %v, want an error matching driver.ErrClosed", err)
	}
}

// receiveResult is what a Receive running in another goroutine returned.
type receiveResult struct {
	ds  []*driver.Delivery
	err error
}

// receiveAsync starts a Receive that nothing will satisfy and returns its
// result channel. The test waits for the goroutine before it ends.
func receiveAsync(t *testing.T, ctx context.Context, sub driver.Subscription) <-chan receiveResult {
	res := make(chan receiveResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ds, err := sub.Receive(ctx, 10)
		res <- receiveResult{ds, err}
	}()
	t.Cleanup(func() { waitStopped(t, done, "a blocked Receive") })
	// Let Receive block before the test acts on it.
	time.Sleep(100 * time.Millisecond)
	return res
}

// expectUnblocked waits for a blocked Receive to return an error matching
// want.
func expectUnblocked(t *testing.T, res <-chan receiveResult, want error, after string) {
	t.Helper()
	select {
	case r := <-res:
		if !errors.Is(r.err, want) {
			t.Errorf("Receive blocked when %s returned (%d deliveries, %v), want an error matching %s",
				after, len(r.ds), r.err, errName(want))
		}
	case <-time.After(promptly):
		t.Fatalf("Receive blocked when %s did not return within %s", after, promptly)
	}
}

func (s *suite) testSubscriptionCloseUnblocksReceive(t *testing.T) {
	dst := dest(s.anyPattern(t), "closesub")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	publish(t, s.open(t), dst, newMessage("unsettled-at-close"))
	d := receiveOne(t, sub)
	res := receiveAsync(t, timeout(t, deliveryTimeout), sub)
	closeSubscription(t, sub)
	expectUnblocked(t, res, driver.ErrClosed, "the subscription closed")

	ctx := timeout(t, promptly)
	if _, err := sub.Receive(ctx, 1); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Receive on a closed subscription: %v, want an error matching driver.ErrClosed", err)
	}
	ds := []*driver.Delivery{d}
	if err := sub.Ack(ctx, ds); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Ack on a closed subscription: %v, want an error matching driver.ErrClosed", err)
	}
	if err := sub.Nack(ctx, ds, 0); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Nack on a closed subscription: %v, want an error matching driver.ErrClosed", err)
	}
	if err := sub.Term(ctx, ds); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Term on a closed subscription: %v, want an error matching driver.ErrClosed", err)
	}
	if err := sub.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
		t.Errorf("second Subscription.Close: %v, want nil or an error matching driver.ErrClosed", err)
	}
}

func (s *suite) testDriverCloseUnblocksReceive(t *testing.T) {
	dst := dest(s.anyPattern(t), "closedriver")
	d := s.open(t)
	sub := subscribe(t, d, dst, driver.SubscribeOptions{Group: s.group()})
	res := receiveAsync(t, timeout(t, deliveryTimeout), sub)
	closeDriver(t, d)
	expectUnblocked(t, res, driver.ErrClosed, "its driver closed")
}

func (s *suite) testUseAfterClose(t *testing.T) {
	dst := dest(s.anyPattern(t), "useafterclose")
	d := s.open(t)
	closeDriver(t, d)
	ctx := timeout(t, opTimeout)
	if err := d.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
		t.Errorf("second Driver.Close: %v, want nil or an error matching driver.ErrClosed", err)
	}
	if err := d.Publish(ctx, dst, []*driver.Message{newMessage("after-close")}); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Publish after Close: %v, want an error matching driver.ErrClosed", err)
	}
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: s.group()})
	if !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want an error matching driver.ErrClosed", err)
	}
	if sub != nil {
		closeSubscription(t, sub)
	}
	if rr, ok := d.(driver.RequestReplier); ok {
		if _, err := rr.Request(ctx, dest(driver.Query, "afterclose"), newMessage("request-after-close")); !errors.Is(err, driver.ErrClosed) {
			t.Errorf("Request after Close: %v, want an error matching driver.ErrClosed", err)
		}
	}
	if got := d.Capabilities(); got.Name != s.caps.Name {
		t.Errorf("Capabilities after Close changed its Name to %q", got.Name)
	}
}

func (s *suite) testContextEndsReceive(t *testing.T) {
	dst := dest(s.anyPattern(t), "ctxreceive")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})

	ctx, cancel := context.WithCancel(t.Context())
	res := receiveAsync(t, ctx, sub)
	cancel()
	expectUnblocked(t, res, context.Canceled, "its context was cancelled")

	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	res = receiveAsync(t, ctx, sub)
	expectUnblocked(t, res, context.DeadlineExceeded, "its context's deadline passed")

	// The subscription still works after a Receive that its context ended.
	m := newMessage("after-cancel")
	publish(t, s.open(t), dst, m)
	got := receiveOne(t, sub)
	checkMessage(t, m, got.Message)
	ack(t, sub, got)
}

func errName(err error) string {
	switch err {
	case driver.ErrClosed:
		return "driver.ErrClosed"
	case context.Canceled:
		return "context.Canceled"
	case context.DeadlineExceeded:
		return "context.DeadlineExceeded"
	}
	return err.Error()
}
