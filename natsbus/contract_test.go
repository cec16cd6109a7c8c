package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// receiveIDs receives until n deliveries arrived or ctx ends, acks them, and
// returns their ids in arrival order.
func receiveIDs(ctx context.Context, t *testing.T, sub driver.Subscription, n int) []string {
	t.Helper()
	var ids []string
	for len(ids) < n {
		ds, err := sub.Receive(ctx, n-len(ids))
		if err != nil {
			t.Fatalf("after %d of %d deliveries (%v): %v", len(ids), n, ids, err)
		}
		for _, d := range ds {
			if d.Err != nil {
				t.Fatalf("delivery %q: %v", d.Message.ID, d.Err)
			}
			ids = append(ids, d.Message.Source+" "+d.Message.ID)
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// expectQuiet fails when sub delivers anything within window.
func expectQuiet(t *testing.T, sub driver.Subscription, window time.Duration, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	ds, err := sub.Receive(ctx, 10)
	if err == nil {
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = fmt.Sprintf("%s (attempt %d)", d.Message.ID, d.Attempt)
		}
		t.Fatalf("%s, yet %v was delivered", why, ids)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: %v", err)
	}
}

func subscribeT(t *testing.T, d *natsbus.Driver, dest driver.Destination, opts driver.SubscribeOptions) driver.Subscription {
	t.Helper()
	sub, err := d.Subscribe(ctxFor(t, 20*time.Second), dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	return sub
}

func msg(source, id string) *driver.Message {
	return &driver.Message{ID: id, Source: source, Type: "contract.test", Data: []byte(id)}
}

// TestDeduplicationBySourceIDDestination: the server's de-duplication of
// PublishDeduplicated keys on (source, id, destination), so only a true
// repeat is dropped, and a dropped repeat is reported with ErrDuplicate.
func TestDeduplicationBySourceIDDestination(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 30*time.Second)
	created := driver.NewDestination(driver.Event, "dedup", "created")
	shipped := driver.NewDestination(driver.Event, "dedup", "shipped")
	subCreated := subscribeT(t, d, created, driver.SubscribeOptions{})
	subShipped := subscribeT(t, d, shipped, driver.SubscribeOptions{})

	// The same id to two event types, and from two sources.
	for _, p := range []struct {
		dest driver.Destination
		m    *driver.Message
	}{
		{created, msg("/orders", "order-1")},
		{shipped, msg("/orders", "order-1")},
		{created, msg("/billing", "order-1")},
	} {
		if err := d.PublishDeduplicated(ctx, p.dest, []*driver.Message{p.m}); err != nil {
			t.Fatalf("publish %s %s to %s: %v", p.m.Source, p.m.ID, p.dest.Name, err)
		}
	}
	// A true repeat, alone and within a batch whose other message is new.
	err := d.PublishDeduplicated(ctx, created, []*driver.Message{msg("/orders", "order-1")})
	if !errors.Is(err, driver.ErrDuplicate) {
		t.Fatalf("republishing (source, id, destination) = %v, want ErrDuplicate", err)
	}
	err = d.PublishDeduplicated(ctx, created, []*driver.Message{msg("/orders", "order-1"), msg("/orders", "order-2")})
	if !errors.Is(err, driver.ErrDuplicate) {
		t.Fatalf("a batch with a repeat = %v, want ErrDuplicate", err)
	}
	if !strings.HasPrefix(err.Error(), "natsbus: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}

	got := receiveIDs(ctx, t, subCreated, 3)
	if want := []string{"/orders order-1", "/billing order-1", "/orders order-2"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("created received %v, want %v", got, want)
	}
	if got := receiveIDs(ctx, t, subShipped, 1); got[0] != "/orders order-1" {
		t.Errorf("shipped received %v", got)
	}
	expectQuiet(t, subCreated, 500*time.Millisecond, "the repeats were reported as duplicates")
	expectQuiet(t, subShipped, 300*time.Millisecond, "one message was published to shipped")
}

// TestDeduplicationHeaderNotExposed: the de-duplication header is the
// driver's own and never appears among a received message's headers.
func TestDeduplicationHeaderNotExposed(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Command, "dedup", "hdr")
	sub := subscribeT(t, d, dest, driver.SubscribeOptions{Group: "g"})
	for _, mode := range []driver.ContentMode{driver.Binary, driver.Structured} {
		m := msg("/s", fmt.Sprint("hdr-", mode))
		m.Mode = mode
		m.Header = map[string][]string{"X-Keep": {"1"}}
		if err := d.PublishDeduplicated(ctx, dest, []*driver.Message{m}); err != nil {
			t.Fatal(err)
		}
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Err != nil {
			t.Fatal(ds[0].Err)
		}
		if got := ds[0].Message.Header; len(got) != 1 || got["X-Keep"][0] != "1" {
			t.Errorf("mode %d: received headers %v, want only X-Keep", mode, got)
		}
		if ds[0].Message.Mode != mode {
			t.Errorf("received Mode %d, want %d", ds[0].Message.Mode, mode)
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEnvelopeChecked: every publishing path refuses, before the wire, an
// envelope that could not travel unchanged, with a *driver.InvalidError.
func TestEnvelopeChecked(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 30*time.Second)
	bad := []*driver.Message{msg("/s", "order-1 "), msg("/s", "a\nb")}
	for _, name := range []string{"bad name", "bad:name", "bad\r\nx", "Upper", "id", "source"} {
		m := msg("/s", "ext")
		m.Extensions = map[string]string{name: "x"}
		bad = append(bad, m)
	}
	checkInvalid := func(t *testing.T, what string, err error) {
		t.Helper()
		var ie *driver.InvalidError
		if !errors.Is(err, driver.ErrInvalid) || !errors.As(err, &ie) {
			t.Errorf("%s: %v, want a *driver.InvalidError", what, err)
		} else if !strings.HasPrefix(err.Error(), "natsbus: ") || strings.Count(err.Error(), "natsbus:") != 1 {
			t.Errorf("%s: error %q is not wrapped once with the package prefix", what, err)
		}
	}
	for _, dest := range []driver.Destination{
		driver.NewDestination(driver.Event, "checked", "e"),
		driver.NewDestination(driver.DeadLetter, "checked"),
		driver.NewDestination(driver.Broadcast, "checked"),
	} {
		t.Run(dest.Pattern.String(), func(t *testing.T) {
			sub := subscribeT(t, d, dest, driver.SubscribeOptions{})
			for _, m := range bad {
				checkInvalid(t, fmt.Sprintf("id %q extensions %v", m.ID, m.Extensions), d.Publish(ctx, dest, []*driver.Message{msg("/s", "fine"), m}))
			}
			if err := d.Publish(ctx, dest, []*driver.Message{msg("/s", "order-1")}); err != nil {
				t.Fatal(err)
			}
			if got := receiveIDs(ctx, t, sub, 1); got[0] != "/s order-1" {
				t.Errorf("received %v, want only order-1", got)
			}
			expectQuiet(t, sub, 300*time.Millisecond, "refused messages never reach the wire")
		})
	}

	t.Run("RequestReply", func(t *testing.T) {
		dest := driver.NewDestination(driver.Query, "checked", "q")
		sub := subscribeT(t, d, dest, driver.SubscribeOptions{Group: "responders"})
		for _, m := range bad {
			_, err := d.Request(ctx, dest, m)
			checkInvalid(t, fmt.Sprintf("request id %q extensions %v", m.ID, m.Extensions), err)
		}
		type result struct {
			m   *driver.Message
			err error
		}
		res := make(chan result, 1)
		go func() {
			m, err := d.Request(ctx, dest, msg("/s", "order-1"))
			res <- result{m, err}
		}()
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Message.ID != "order-1" {
			t.Fatalf("responder received %q", ds[0].Message.ID)
		}
		for _, m := range bad {
			checkInvalid(t, fmt.Sprintf("reply id %q extensions %v", m.ID, m.Extensions), d.Reply(ctx, ds[0], m))
		}
		if err := d.Reply(ctx, ds[0], msg("/s", "reply-1")); err != nil {
			t.Fatal(err)
		}
		r := <-res
		if r.err != nil || r.m.ID != "reply-1" {
			t.Fatalf("request = %v, %v; want reply-1", r.m, r.err)
		}
	})
}

// TestCloseGivesBackAtOnce: what a closing member pulled, handed out or
// not, goes to another member of its group at once, not after the ack
// wait (30 s here), run after run.
func TestCloseGivesBackAtOnce(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	// A small prefetch, so that A's buffer is full and more messages wait
	// inside the client when it closes, the ones a stopped consume loop
	// used to drop.
	cfgA := serverConfig(srv)
	cfgA.Prefetch = 4
	dA := openDriver(t, cfgA)
	const runs, n = 20, 20
	for run := range runs {
		ctx := ctxFor(t, 30*time.Second)
		dest := driver.NewDestination(driver.Command, "giveback", fmt.Sprint("run", run))
		opts := driver.SubscribeOptions{Group: "workers", AckWait: 30 * time.Second}
		a, err := dA.Subscribe(ctx, dest, opts)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []*driver.Message
		for i := range n {
			msgs = append(msgs, msg("/s", fmt.Sprint(i)))
		}
		if err := d.Publish(ctx, dest, msgs); err != nil {
			t.Fatal(err)
		}
		// A holds one delivery unsettled; the rest sit in its prefetch.
		held, err := a.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		b := subscribeT(t, d, dest, opts)
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		within, cancel := context.WithTimeout(ctx, 10*time.Second)
		got := receiveIDs(within, t, b, n)
		cancel()
		elapsed := time.Since(start)
		sort.Slice(got, func(i, j int) bool { return len(got[i]) < len(got[j]) || len(got[i]) == len(got[j]) && got[i] < got[j] })
		var want []string
		for i := range n {
			want = append(want, fmt.Sprint("/s ", i))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("run %d: B received %v", run, got)
		}
		if elapsed > 5*time.Second {
			t.Errorf("run %d: B received everything after %s; the ack wait is 30 s, a give-back is immediate", run, elapsed)
		}
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		_ = held
	}
}

// TestAckDeadlineKeptWhileHeld: a delivery held unsettled for several ack
// waits is not redelivered to another member while its subscription is
// open, and not at all once acked.
func TestAckDeadlineKeptWhileHeld(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 30*time.Second)
	dest := driver.NewDestination(driver.Command, "held", "long")
	opts := driver.SubscribeOptions{Group: "workers", AckWait: time.Second}
	a := subscribeT(t, d, dest, opts)
	if err := d.Publish(ctx, dest, []*driver.Message{msg("/s", "slow-1")}); err != nil {
		t.Fatal(err)
	}
	ds, err := a.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := subscribeT(t, d, dest, opts)
	// B watches while A holds the message for 3.5 ack waits.
	expectQuiet(t, b, 3500*time.Millisecond, "A holds the message unsettled with its subscription open")
	if err := a.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
	expectQuiet(t, b, 1500*time.Millisecond, "A acked the message")
	expectQuiet(t, a, 300*time.Millisecond, "A acked the message")
}

// TestSlowHandlerPrefetchNoDuplicates: messages waiting in the prefetch
// buffer behind a slow handler keep their deadline too: 30 messages, ack
// wait 1 s, 150 ms each, every one delivered once.
func TestSlowHandlerPrefetchNoDuplicates(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 60*time.Second)
	dest := driver.NewDestination(driver.Command, "held", "prefetch")
	sub := subscribeT(t, d, dest, driver.SubscribeOptions{Group: "workers", AckWait: time.Second})
	const n = 30
	var msgs []*driver.Message
	for i := range n {
		msgs = append(msgs, msg("/s", fmt.Sprint(i)))
	}
	if err := d.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := ds[0].Message.ID; got != fmt.Sprint(i) || ds[0].Attempt != 1 {
			t.Fatalf("delivery %d is %q attempt %d, want %d attempt 1", i, got, ds[0].Attempt, i)
		}
		time.Sleep(150 * time.Millisecond) // the handler's work
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	expectQuiet(t, sub, 1500*time.Millisecond, "every message was acked once")
}

// TestCloseHonoursContextWithServerGone: once the connection gave up (its
// reconnect attempts exhausted), closing a subscription and the driver
// returns by the context's deadline.
func TestCloseHonoursContextWithServerGone(t *testing.T) {
	for _, reconnects := range []int{1, -1} {
		t.Run(fmt.Sprint("MaxReconnects=", reconnects), func(t *testing.T) {
			srv := startServer(t, nil)
			cfg := serverConfig(srv)
			cfg.MaxReconnects = reconnects
			cfg.ReconnectWait = 50 * time.Millisecond
			ctx := ctxFor(t, 20*time.Second)
			d, err := natsbus.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := d.Subscribe(ctx, driver.NewDestination(driver.Event, "gone", "e"), driver.SubscribeOptions{Group: "g"})
			if err != nil {
				t.Fatal(err)
			}
			private, err := d.Subscribe(ctx, driver.NewDestination(driver.Command, "gone", "c"), driver.SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			core, err := d.Subscribe(ctx, driver.NewDestination(driver.Broadcast, "gone"), driver.SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(15 * time.Second); ; {
				if reconnects > 0 && d.Conn().IsClosed() || reconnects < 0 && !d.Conn().IsConnected() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("connection still %v", d.Conn().Status())
				}
				time.Sleep(10 * time.Millisecond)
			}
			closeWithin := func(what string, close func(context.Context) error) {
				t.Helper()
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				start := time.Now()
				err := close(cctx)
				if elapsed := time.Since(start); elapsed > 3*time.Second {
					t.Errorf("%s took %s with a 2 s deadline", what, elapsed)
				}
				if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, driver.ErrUnavailable) {
					t.Errorf("%s: %v, want nil or the context's error", what, err)
				}
			}
			closeWithin("stored subscription Close", stored.Close)
			closeWithin("private subscription Close", private.Close)
			closeWithin("core subscription Close", core.Close)
			closeWithin("driver Close", d.Close)
		})
	}
}

// TestDeclareGroup: a declared group keeps what is published before its
// first member subscribes; core NATS cannot.
func TestDeclareGroup(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Event, "declared", "created")
	opts := driver.SubscribeOptions{Group: "late", Durable: true}
	for range 2 { // declaring again changes nothing
		if err := d.DeclareGroup(ctx, dest, opts); err != nil {
			t.Fatal(err)
		}
	}
	var msgs []*driver.Message
	for i := range 5 {
		msgs = append(msgs, msg("/s", fmt.Sprint(i)))
	}
	if err := d.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	sub := subscribeT(t, d, dest, opts)
	if got := strings.Join(receiveIDs(ctx, t, sub, 5), ","); got != "/s 0,/s 1,/s 2,/s 3,/s 4" {
		t.Errorf("the group's first member received %s", got)
	}
	err := d.DeclareGroup(ctx, driver.NewDestination(driver.Broadcast, "declared"), opts)
	if !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("declaring a group on core NATS: %v, want ErrUnsupported", err)
	}
}

// TestSubscribeCloseLeavesNoConsumer: many subscribe/close cycles leave no
// consumer behind on the server (and, through TestMain, no goroutine).
func TestSubscribeCloseLeavesNoConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	ctx := ctxFor(t, 120*time.Second)
	dest := driver.NewDestination(driver.Event, "cycles", "e")
	stream, err := d.JetStream().Stream(ctx, d.StreamName(driver.Event))
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	cycle := func(opts driver.SubscribeOptions, n int) {
		for i := range n {
			sub, err := d.Subscribe(ctx, dest, opts)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			if err := sub.Close(ctx); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
		}
	}
	private := driver.SubscribeOptions{}
	group := driver.SubscribeOptions{Group: "g"}
	durable := driver.SubscribeOptions{Group: "d", Durable: true}
	// One warm-up cycle of each, so that the server's goroutines for the
	// groups' consumers count in the baseline.
	for _, opts := range []driver.SubscribeOptions{private, group, durable} {
		cycle(opts, 1)
	}
	goroutines := runtime.NumGoroutine()
	start := time.Now()
	cycle(private, 1000)
	t.Logf("1000 private cycles in %s", time.Since(start))
	// Each group keeps its one consumer, the group's position.
	if got := consumers(); got != 2 {
		t.Errorf("%d consumers after 1000 private subscriptions closed, want the groups' 2", got)
	}
	start = time.Now()
	cycle(group, 1000)
	cycle(durable, 1000)
	t.Logf("2000 group cycles in %s", time.Since(start))
	if got := consumers(); got != 2 {
		t.Errorf("%d consumers after two groups' subscriptions cycled, want 2", got)
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > goroutines+2; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the cycles:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
