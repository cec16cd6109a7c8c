package drivertest

import (
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

func (s *suite) testCapabilities(t *testing.T) {
	c := s.caps
	if c.Name == "" {
		t.Error("Capabilities.Name is empty")
	}
	if c.MaxMessageSize <= 0 {
		t.Errorf("Capabilities.MaxMessageSize = %d, want > 0", c.MaxMessageSize)
	}
	if len(c.Patterns) == 0 {
		t.Error("Capabilities.Patterns is empty")
	}
	valid := append(driver.Patterns(), driver.Reply, driver.DeadLetter)
	for i, p := range c.Patterns {
		if !slices.Contains(valid, p) {
			t.Errorf("Capabilities.Patterns holds unknown pattern %v", p)
		}
		if slices.Contains(c.Patterns[:i], p) {
			t.Errorf("Capabilities.Patterns lists %v twice", p)
		}
	}
	if c.NativeRequestReply != s.implementsRR {
		t.Errorf("Capabilities.NativeRequestReply = %v, but the driver implements driver.RequestReplier: %v",
			c.NativeRequestReply, s.implementsRR)
	}
	if c.NativeRequestReply && !c.Serves(driver.Query) {
		t.Error("Capabilities.NativeRequestReply is set, but Patterns lacks Query")
	}
	if c.NativeDelay && !c.Redelivery {
		t.Error("Capabilities.NativeDelay is set without Redelivery")
	}

	d := s.open(t)
	if again := d.Capabilities(); !reflect.DeepEqual(again, c) {
		t.Errorf("a second connection reports Capabilities %+v, the first %+v", again, c)
	}
}

// testPublishSubscribe checks, for every served pattern that Publish and
// Subscribe carry, that what is published after Subscribe returns arrives.
func (s *suite) testPublishSubscribe(t *testing.T) {
	ran := false
	for _, p := range s.caps.Patterns {
		if p == driver.Query || p == driver.Reply {
			continue
		}
		ran = true
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			// Broadcast reaches every instance: it has no groups.
			group := ""
			if p != driver.Broadcast {
				group = s.group()
			}
			dst := dest(p, "pubsub")
			sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: group})
			msgs := newMessages("ps", 5)
			pub := s.open(t)
			publish(t, pub, dst, msgs[:2]...)
			for _, m := range msgs[2:] {
				publish(t, pub, dst, m)
			}
			got := receiveAndAck(t, sub, len(msgs), 10)
			expectNone(t, sub, quietWindow, "all messages were received and acked")
			checkExactlyOnce(t, "the subscriber", msgs, got)
		})
	}
	if !ran {
		t.Skip("driver serves no pattern that Publish and Subscribe carry")
	}
}

// testAttributes checks that every part of the envelope survives the broker.
func (s *suite) testAttributes(t *testing.T) {
	p := s.anyPattern(t)
	dst := dest(p, "attributes")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})

	full := &driver.Message{
		ID:              "attr-full-" + unique(),
		Source:          "https://example.com/drivertest/source",
		Type:            "com.example.drivertest.attributes",
		Subject:         "orders/42",
		Time:            time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600)),
		DataContentType: "application/octet-stream",
		DataSchema:      "https://example.com/schemas/attributes/v1",
		CorrelationID:   "corr-7f1c",
		CausationID:     "cause-9d2e",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		ReplyTo:         "replies.drivertest.instance-1",
		Extensions:      map[string]string{"tenant": "acme", "region": "eu-west-1"},
		Key:             "customer-42",
		Header: map[string][]string{
			"X-Multi":  {"one", "two, three", "café ☕"},
			"x-lower":  {"Case Matters"},
			"X-Single": {"1"},
		},
		// Not UTF-8: a NUL, bytes of no code point, a broken sequence, CR LF.
		Data: []byte{0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28, '\r', '\n', 'x', 0x00},
	}
	minimal := &driver.Message{ID: "attr-minimal-" + unique(), Source: "/drivertest", Type: "drivertest.minimal"}
	emptyData := &driver.Message{ID: "attr-empty-" + unique(), Source: "/drivertest", Type: "drivertest.empty",
		Time: time.Now(), Data: []byte{}}
	msgs := []*driver.Message{full, minimal, emptyData}
	// The driver gets copies, so that the originals stay the reference even
	// if it modifies what it is given.
	pub := s.open(t)
	for _, m := range msgs {
		publish(t, pub, dst, m.Clone())
	}

	got := receiveAndAck(t, sub, len(msgs), 10)
	for _, d := range got {
		if d.Attempt != 1 {
			t.Errorf("first delivery of %q has Attempt %d, want 1", d.Message.ID, d.Attempt)
		}
	}
	checkExactlyOnce(t, "the subscriber", msgs, got)
}

// testBatches checks one Publish of many messages and Receive's bounds.
func (s *suite) testBatches(t *testing.T) {
	p := s.anyPattern(t)
	dst := dest(p, "batches")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	msgs := newMessages("batch", 100)
	sent := make([]*driver.Message, len(msgs))
	for i, m := range msgs {
		m.Header = map[string][]string{"X-Index": {strconv.Itoa(i)}}
		sent[i] = m.Clone()
	}
	publish(t, s.open(t), dst, sent...)
	// The driver must not retain what it was given: scribbling over it after
	// Publish returned changes nothing that is delivered.
	for _, m := range sent {
		clear(m.Data)
		m.Header["X-Index"][0] = "scribbled"
		m.ID = "scribbled"
	}

	const max = 50
	ctx := timeout(t, deliveryTimeout)
	var got []*driver.Delivery
	var sizes []int
	for len(got) < len(msgs) {
		ds, err := sub.Receive(ctx, max)
		if err != nil {
			t.Fatalf("Receive: got %d of %d deliveries in batches of %v: %v", len(got), len(msgs), sizes, err)
		}
		sizes = append(sizes, len(ds))
		ds = checkBatch(t, ds, max)
		got = append(got, ds...)
		ack(t, sub, ds...)
	}
	t.Logf("Receive(max %d) returned batches of %v", max, sizes)
	expectNone(t, sub, quietWindow, "all messages were received and acked")
	checkExactlyOnce(t, "the subscriber", msgs, got)

	// Receive(ctx, 1) is the smallest batch.
	publish(t, s.open(t), dst, newMessages("single", 3)...)
	for range 3 {
		ds, err := sub.Receive(timeout(t, deliveryTimeout), 1)
		if err != nil {
			t.Fatalf("Receive(max 1): %v", err)
		}
		ack(t, sub, checkBatch(t, ds, 1)...)
	}
}

// publishSpread publishes msgs in batches of size, pausing between batches so
// that the members of a group all have a chance to receive.
func publishSpread(t *testing.T, d driver.Driver, dst driver.Destination, msgs []*driver.Message, size int, pause time.Duration) {
	t.Helper()
	for i := 0; i < len(msgs); i += size {
		publish(t, d, dst, msgs[i:min(i+size, len(msgs))]...)
		time.Sleep(pause)
	}
}

// testStartNew checks that a new subscription with the default StartNew
// receives nothing that was published before it was established.
func (s *suite) testStartNew(t *testing.T) {
	dst := dest(s.anyPattern(t), "startnew")
	pub := s.open(t)
	old := newMessage("before-subscribe")
	publish(t, pub, dst, old)
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group(), StartAt: driver.StartNew})
	m := newMessage("after-subscribe")
	publish(t, pub, dst, m)
	d := receiveOne(t, sub)
	if d.Message.ID != m.ID {
		t.Errorf("a new subscription with StartNew received %q, published before it", d.Message.ID)
	}
	ack(t, sub, d)
	expectNone(t, sub, quietWindow, "only one message was published after Subscribe")
}
