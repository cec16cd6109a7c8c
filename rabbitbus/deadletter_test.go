package rabbitbus_test

import (
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// Reading more often than a quorum queue's delivery limit loses nothing
// (keeper queues have no limit), and what was read comes back in order,
// marked redelivered only on the broker: the messages and Refs are the
// same at every read.
func TestDeadLetterReadsPastTheDeliveryLimit(t *testing.T) {
	b := newBroker(t)
	cfg := b.config()
	cfg.QueueType, cfg.DeliveryLimit = rabbitbus.Quorum, 2
	ctx := ctxFor(t, time.Minute)
	d, err := rabbitbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(ctx) })
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "orders", "placed"))
	msgs := []*driver.Message{
		{ID: "1", Source: "/t", Type: "orders.placed", Data: []byte("one")},
		{ID: "2", Source: "/t", Type: "orders.placed", Data: []byte("two")},
	}
	if err := d.Publish(ctx, dl, msgs); err != nil {
		t.Fatal(err)
	}
	var first []string
	for read := range 5 {
		var ids, refs []string
		if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			ids = append(ids, e.Message.ID+"="+string(e.Message.Data))
			refs = append(refs, e.Ref)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if len(ids) != 2 || ids[0] != "1=one" || ids[1] != "2=two" {
			t.Fatalf("read %d: %v, want [1=one 2=two]", read+1, ids)
		}
		if read == 0 {
			first = refs
		} else if refs[0] != first[0] || refs[1] != first[1] {
			t.Fatalf("read %d: Refs %v, first read %v", read+1, refs, first)
		}
	}
	q, err := d.QueueName(dl, "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.QueueName(dl, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if q != b.prefix+"."+dl.Name || g != q+".audit" {
		t.Fatalf("queues %q and %q: want the keeper %s.%s and a group queue of its own", q, g, b.prefix, dl.Name)
	}
	dests, err := d.DeadLetterDestinations(ctx)
	if err != nil || len(dests) != 1 || dests[0] != dl {
		t.Fatalf("DeadLetterDestinations = %v, %v; want [%v]", dests, err, dl)
	}
}
