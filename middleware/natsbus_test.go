package middleware_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/middleware"
	"github.com/marty-msf/eventbus/natsbus"
)

// TestBreakerPausesIntakeOnJetStream holds messages while the breaker is
// open for longer than their ack wait: none is redelivered meanwhile (the
// driver extends the deadline) and no attempt is spent.
func TestBreakerPausesIntakeOnJetStream(t *testing.T) {
	ctx := context.Background()
	drv, err := natsbus.OpenEmbedded(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := &breakerRun{}
	run.down.Store(true)
	// Open 2.5s, ack wait 1s.
	br := middleware.NewBreaker(run.settings(2500 * time.Millisecond))
	forever := eventbus.RetryPolicy{MaxAttempts: eventbus.RetryForever, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	b := startBus(t, drv, forever, run.handler, []eventbus.Middleware{br.Wrap},
		eventbus.WithConcurrency(4), eventbus.WithAckWait(time.Second))
	const n = 20
	for i := range n {
		publish(t, b, fmt.Sprint("m", i))
	}
	waitFor(t, "open", func() bool { return run.opened.Load() >= 1 })
	run.down.Store(false)
	waitFor(t, "all handled", func() bool { return b.Stats().Handled == n })
	run.check(t)
	st := b.Stats()
	if got := run.calls.Load(); int(got) != n+int(st.Failed) || st.Failed > 3+4 {
		t.Errorf("%d calls with %d failures; want %d successes and at most 7 failures, no redelivery while open", got, st.Failed, n)
	}
	t.Logf("%d messages, %d failed attempts, %d calls", n, st.Failed, run.calls.Load())
}
