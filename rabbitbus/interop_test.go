package rabbitbus_test

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// TestInteropRawConsumer shows a plain amqp091 consumer, as another
// language's CloudEvents SDK would, reading our event's attributes from the
// binding's application properties and content-type.
func TestInteropRawConsumer(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 30*time.Second)
	d, err := rabbitbus.Open(ctx, b.config())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	conn, err := amqp.Dial(b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another program binds a pattern on the topic exchange of events.
	if err := ch.QueueBind(q.Name, "events.order.*", d.ExchangeName(driver.Event), false, nil); err != nil {
		t.Fatal(err)
	}
	dl, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	m := &driver.Message{ID: "evt-1", Source: "/shop", Type: "order.created", Subject: "o-1", Time: when,
		DataContentType: "application/json", CorrelationID: "corr-1", Key: "customer-7",
		Extensions: map[string]string{"tenant": "acme"}, Header: map[string][]string{"X-Trace": {"a", "b"}},
		Data: []byte(`{"total":12}`)}
	if err := d.Publish(ctx, driver.NewDestination(driver.Event, "order", "created"), []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-dl:
		want := map[string]string{
			"cloudEvents:specversion": "1.0", "cloudEvents:id": "evt-1", "cloudEvents:source": "/shop",
			"cloudEvents:type": "order.created", "cloudEvents:subject": "o-1",
			"cloudEvents:time": "2025-03-04T05:06:07Z", "cloudEvents:correlationid": "corr-1",
			"cloudEvents:partitionkey": "customer-7", "cloudEvents:tenant": "acme",
		}
		for k, v := range want {
			if got.Headers[k] != v {
				t.Errorf("application property %s = %v, want %q", k, got.Headers[k], v)
			}
		}
		if _, ok := got.Headers["cloudEvents:datacontenttype"]; ok {
			t.Error("datacontenttype travels as an application property; the binding maps it to content-type")
		}
		if got.ContentType != "application/json" || string(got.Body) != `{"total":12}` || got.MessageId != "evt-1" {
			t.Errorf("content-type %q, message-id %q, body %s", got.ContentType, got.MessageId, got.Body)
		}
		if arr, ok := got.Headers["X-Trace"].([]any); !ok || len(arr) != 2 || arr[0] != "a" || arr[1] != "b" {
			t.Errorf("multi-valued header X-Trace = %#v", got.Headers["X-Trace"])
		}
		if got.DeliveryMode != amqp.Persistent {
			t.Errorf("delivery mode %d, want persistent", got.DeliveryMode)
		}
	case <-ctx.Done():
		t.Fatal("the raw consumer received nothing")
	}
}

// TestInteropRawPublisher shows our consumer reading events that a plain
// amqp091 publisher sent with the binding's properties set by hand: both
// prefixes (cloudEvents: and cloudEvents_), native AMQP types, and the
// structured mode; and a message that is no event arriving as malformed.
func TestInteropRawPublisher(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 30*time.Second)
	d, err := rabbitbus.Open(ctx, b.config())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	dest := driver.NewDestination(driver.Event, "payment", "settled")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "ledger"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	pubs := []amqp.Publishing{
		{ContentType: "text/plain", Body: []byte("colon"), Headers: amqp.Table{
			"cloudEvents:specversion": "1.0", "cloudEvents:id": "p-1", "cloudEvents:source": "/java",
			"cloudEvents:type": "payment.settled", "cloudEvents:time": when, "cloudEvents:amount": int64(42),
			"X-Other": "kept"}},
		{ContentType: "text/plain", Body: []byte("underscore"), Headers: amqp.Table{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": "p-2", "cloudEvents_source": "/dotnet",
			"cloudEvents_type": "payment.settled"}},
		{ContentType: "application/cloudevents+json; charset=utf-8",
			Body: []byte(`{"specversion":"1.0","id":"p-3","source":"/js","type":"payment.settled","datacontenttype":"application/json","data":{"ok":true}}`)},
		{ContentType: "text/plain", Body: []byte("not an event")},
	}
	for _, p := range pubs {
		if err := ch.PublishWithContext(ctx, d.ExchangeName(driver.Event), dest.Name, false, false, p); err != nil {
			t.Fatal(err)
		}
	}
	var got []*driver.Delivery
	for len(got) < len(pubs) {
		ds, err := sub.Receive(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
	}
	if err := sub.Ack(ctx, got); err != nil {
		t.Fatal(err)
	}
	m := got[0].Message
	if got[0].Err != nil || m.ID != "p-1" || m.Source != "/java" || !m.Time.Equal(when) || m.Extensions["amount"] != "42" ||
		m.DataContentType != "text/plain" || string(m.Data) != "colon" || m.Header["X-Other"][0] != "kept" {
		t.Errorf("cloudEvents: event read as %+v (err %v)", m, got[0].Err)
	}
	if m := got[1].Message; got[1].Err != nil || m.ID != "p-2" || m.Source != "/dotnet" || string(m.Data) != "underscore" {
		t.Errorf("cloudEvents_ event read as %+v (err %v)", m, got[1].Err)
	}
	if m := got[2].Message; got[2].Err != nil || m.ID != "p-3" || m.Mode != driver.Structured || string(m.Data) != `{"ok":true}` {
		t.Errorf("structured event read as %+v (err %v)", m, got[2].Err)
	}
	if !errors.Is(got[3].Err, driver.ErrMalformed) || string(got[3].Message.Data) != "not an event" {
		t.Errorf("a message that is no event: err %v, data %q", got[3].Err, got[3].Message.Data)
	}
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
