package drivertest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testRequestReply checks native request/reply, with the requester and the
// responder on two connections.
func (s *suite) testRequestReply(t *testing.T) {
	s.requireCaps(t, "NativeRequestReply")
	t.Run("Concurrent", s.testRequestConcurrent)
	t.Run("Timeout", s.testRequestTimeout)
	t.Run("NoResponders", s.testRequestNoResponders)
}

// openRequester opens a connection as a RequestReplier.
func (s *suite) openRequester(t *testing.T) (driver.Driver, driver.RequestReplier) {
	t.Helper()
	d := s.open(t)
	rr, ok := d.(driver.RequestReplier)
	if !ok {
		t.Fatalf("driver claims NativeRequestReply but %T does not implement driver.RequestReplier", d)
	}
	return d, rr
}

// replyTo is the reply a responder gives to req: its content depends on
// req's, so that a reply given to the wrong request shows.
func replyTo(req *driver.Message) *driver.Message {
	return &driver.Message{
		ID:            "reply-to-" + req.ID,
		Source:        "/drivertest/responder",
		Type:          "drivertest.reply",
		Time:          req.Time.Add(time.Millisecond),
		CorrelationID: req.ID,
		Header:        map[string][]string{"X-Request": {req.ID}},
		Data:          append([]byte("reply to "), req.Data...),
	}
}

func (s *suite) testRequestConcurrent(t *testing.T) {
	dst := dest(driver.Query, "request")
	resp, rr := s.openRequester(t)
	sub := subscribe(t, resp, dst, driver.SubscribeOptions{Group: s.group()})

	const n = 16
	reqs := newMessages("req", n)
	for _, m := range reqs {
		m.Type = "drivertest.request"
	}
	sent := make(map[string]*driver.Message, n)
	for _, m := range reqs {
		sent[m.ID] = m
	}

	// The responder answers each batch in reverse order, so that replies do
	// not simply follow requests.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); waitStopped(t, done, "the responder's Receive") })
	var replies []*driver.Message // sent by the responder, by the responder's goroutine only
	go func() {
		defer close(done)
		for {
			ds, err := sub.Receive(ctx, n)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
					t.Errorf("responder: Receive: %v", err)
				}
				return
			}
			ds = checkBatch(t, ds, n)
			for _, d := range slices.Backward(ds) {
				want, ok := sent[d.Message.ID]
				if !ok {
					t.Errorf("responder received unexpected request %q", d.Message.ID)
					continue
				}
				got := d.Message.Clone()
				got.ReplyTo = want.ReplyTo // the driver's reply address is its own business
				checkMessage(t, want, got)
				reply := replyTo(want)
				replies = append(replies, reply)
				rctx, rcancel := context.WithTimeout(ctx, opTimeout)
				if err := rr.Reply(rctx, d, reply.Clone()); err != nil {
					t.Errorf("Reply to %q: %v", d.Message.ID, err)
				}
				rcancel()
			}
			actx, acancel := context.WithTimeout(ctx, opTimeout)
			if err := sub.Ack(actx, ds); err != nil && ctx.Err() == nil {
				t.Errorf("responder: Ack: %v", err)
			}
			acancel()
		}
	}()

	_, req := s.openRequester(t)
	var wg sync.WaitGroup
	for _, m := range reqs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
			defer cancel()
			reply, err := req.Request(ctx, dst, m.Clone())
			if err != nil {
				t.Errorf("Request %q: %v", m.ID, err)
				return
			}
			if reply == nil {
				t.Errorf("Request %q returned a nil reply and no error", m.ID)
				return
			}
			checkMessage(t, replyTo(m), reply)
		})
	}
	wg.Wait()
	cancel()
	<-done
	if len(replies) != n {
		t.Errorf("the responder replied %d times to %d requests", len(replies), n)
	}
}

// testRequestTimeout checks that a request whose responder never replies
// ends with the context's deadline.
func (s *suite) testRequestTimeout(t *testing.T) {
	dst := dest(driver.Query, "timeout")
	resp, _ := s.openRequester(t)
	sub := subscribe(t, resp, dst, driver.SubscribeOptions{Group: s.group()})
	_, req := s.openRequester(t)

	const deadline = 500 * time.Millisecond
	type result struct {
		reply *driver.Message
		err   error
		took  time.Duration
	}
	unanswered := newMessage("unanswered")
	res := make(chan result, 1)
	done := make(chan struct{})
	t.Cleanup(func() { waitStopped(t, done, "the unanswered Request") })
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		reply, err := req.Request(ctx, dst, unanswered.Clone())
		res <- result{reply, err, time.Since(start)}
	}()

	// The responder receives the request and settles it without replying.
	d := receiveOne(t, sub)
	if d.Message.ID != unanswered.ID {
		t.Errorf("responder received %q, want the request", d.Message.ID)
	}
	ack(t, sub, d)

	select {
	case r := <-res:
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("unanswered Request returned (%v, %v), want an error matching context.DeadlineExceeded", r.reply, r.err)
		}
		if r.took < deadline-50*time.Millisecond {
			t.Errorf("unanswered Request returned after %s, before its deadline of %s", r.took, deadline)
		}
	case <-time.After(deadline + promptly):
		t.Fatalf("unanswered Request did not return within %s of its deadline", promptly)
	}
}

// testRequestNoResponders checks that a request to a destination nobody
// subscribes to fails at once with ErrNoResponders, not at its deadline.
func (s *suite) testRequestNoResponders(t *testing.T) {
	_, req := s.openRequester(t)
	const deadline = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	reply, err := req.Request(ctx, dest(driver.Query, "nobody"), newMessage("nobody-listens"))
	took := time.Since(start)
	if !errors.Is(err, driver.ErrNoResponders) {
		t.Errorf("Request with no responders returned (%v, %v), want an error matching driver.ErrNoResponders", reply, err)
	}
	if took > deadline/2 {
		t.Errorf("Request with no responders took %s with a deadline of %s: it must fail promptly", took, deadline)
	}
	t.Logf("no responders reported after %s", took.Round(time.Microsecond))
}
