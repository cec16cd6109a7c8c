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
