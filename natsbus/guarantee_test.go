package natsbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// storedMsg is a message as the stream holds it.
type storedMsg struct {
	id, msgID string
}

// storedOn reads every message the stream of pattern p holds on subject,
// as stored: its ce-id and its Nats-Msg-Id header ("" when absent).
func storedOn(ctx context.Context, t *testing.T, d *natsbus.Driver, p driver.Pattern, subject string) []storedMsg {
	t.Helper()
	st, err := d.JetStream().Stream(ctx, d.StreamName(p))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == subject {
			out = append(out, storedMsg{id: m.Header.Get("ce-id"), msgID: m.Header.Get("Nats-Msg-Id")})
		}
	}
	return out
}

// The de-duplication id follows the route's guarantee: an exactly-once
// route's messages carry Nats-Msg-Id and a republish of the same (source,
// id) is stored once and reported with ErrDuplicate, by the per-call
// publish and the Publisher alike; an at-least-once route's messages carry
// none, and a republish is stored again.
func TestDeduplicationFollowsDeliveryGuarantee(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	routes := []eventbus.Route{{Pattern: eventbus.EventPattern, Match: "exact.*", Backend: "nats", Delivery: eventbus.ExactlyOnce}}
	b := eventbus.New(&eventbus.Options{Source: "/shop", Routes: routes})
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Register("nats", d); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, time.Minute)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p := b.NewPublisher(nil)
	t.Cleanup(func() { _ = p.Close(context.Background()) })

	exact := func() *eventbus.Message {
		return &eventbus.Message{ID: "order-1", Type: "exact.created", Data: []byte("{}")}
	}
	if err := b.PublishEvent(ctx, exact()); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, exact()); !errors.Is(err, eventbus.ErrDuplicate) {
		t.Errorf("PublishEvent again on an exactly-once route: %v, want ErrDuplicate", err)
	}
	if err := p.PublishEvent(ctx, exact()).Wait(ctx); !errors.Is(err, eventbus.ErrDuplicate) {
		t.Errorf("Publisher.PublishEvent again on an exactly-once route: %v, want ErrDuplicate", err)
	}

	plain := func() *eventbus.Message {
		return &eventbus.Message{ID: "order-1", Type: "plain.created", Data: []byte("{}")}
	}
	if err := b.PublishEvent(ctx, plain()); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, plain()); err != nil {
		t.Errorf("PublishEvent again on an at-least-once route: %v, want it stored again", err)
	}
	if err := p.PublishEvent(ctx, plain()).Wait(ctx); err != nil {
		t.Errorf("Publisher.PublishEvent again on an at-least-once route: %v, want it stored again", err)
	}

	got := storedOn(ctx, t, d, driver.Event, "events.exact.created")
	if len(got) != 1 || got[0].id != "order-1" || len(got[0].msgID) != 32 {
		t.Errorf("exactly-once route: stored %+v, want order-1 once, with a 32-digit Nats-Msg-Id", got)
	}
	got = storedOn(ctx, t, d, driver.Event, "events.plain.created")
	if len(got) != 3 {
		t.Errorf("at-least-once route: stored %d messages, want the 3 publishes", len(got))
	}
	for _, m := range got {
		if m.id != "order-1" || m.msgID != "" {
			t.Errorf("at-least-once route: stored %+v, want order-1 without Nats-Msg-Id", m)
		}
	}
}

// Two groups that give up the same message each leave a dead letter, and
// the dead letters carry their de-duplication id whatever the origin's
// guarantee: a dead-letter publish the driver retries is stored once.
func TestDeadLettersDeduplicated(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	b := eventbus.New(&eventbus.Options{Source: "/shop", Retry: eventbus.RetryPolicy{MaxAttempts: 1}})
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Register("nats", d); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, time.Minute)
	if _, err := b.SubscribeEvents(ctx, []string{"dl.refused"}, "billing", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		return eventbus.Permanent(errors.New("refused"))
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, &eventbus.Message{ID: "dl-1", Type: "dl.refused", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	var dls []storedMsg
	waitUntil(t, "the dead letter stored", func() bool {
		dls = storedOn(ctx, t, d, driver.DeadLetter, "deadletter.events.dl.refused")
		return len(dls) > 0
	})
	if len(dls) != 1 || dls[0].id != "dl-1" || len(dls[0].msgID) != 32 {
		t.Fatalf("dead letter stored as %+v, want dl-1 once, with a 32-digit Nats-Msg-Id", dls)
	}
}
