package driver_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

func full() *driver.Message {
	return &driver.Message{
		ID: "id-1", Source: "orders", Type: "order.created", Subject: "o-7",
		Time:            time.Date(2026, 11, 23, 9, 0, 0, 123456789, time.UTC),
		DataContentType: "application/json", DataSchema: "https://example.com/order.json",
		CorrelationID: "c-1", CausationID: "cause-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		TraceState: "congo=t61rcWkgMzE", ReplyTo: "replies.abc",
		Extensions: map[string]string{"tenant": "acme"},
		Key:        "k", Header: map[string][]string{"X-A": {"1", "2"}},
		Data: []byte{0xff, 0x00, 0xfe},
	}
}

func TestAttributesRoundTrip(t *testing.T) {
	m := full()
	var back driver.Message
	m.EachAttribute(func(name, value string) {
		if err := back.SetAttribute(name, value); err != nil {
			t.Fatalf("SetAttribute(%s): %v", name, err)
		}
	})
	back.Key, back.Header, back.Data = m.Key, m.Header, m.Data
	if back.ID != m.ID || back.Source != m.Source || back.Type != m.Type || back.Subject != m.Subject ||
		!back.Time.Equal(m.Time) || back.DataContentType != m.DataContentType || back.DataSchema != m.DataSchema ||
		back.CorrelationID != m.CorrelationID || back.CausationID != m.CausationID || back.TraceParent != m.TraceParent ||
		back.TraceState != m.TraceState || back.ReplyTo != m.ReplyTo || back.Extensions["tenant"] != "acme" {
		t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", back, *m)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedAttributes(t *testing.T) {
	var m driver.Message
	for name, value := range map[string]string{"specversion": "0.3", "time": "yesterday"} {
		err := m.SetAttribute(name, value)
		var me *driver.MalformedError
		if !errors.Is(err, driver.ErrMalformed) || !errors.As(err, &me) {
			t.Errorf("%s=%q: got %v, want a MalformedError", name, value, err)
		}
	}
	if err := (&driver.Message{ID: "1", Source: "s"}).Validate(); !errors.Is(err, driver.ErrMalformed) {
		t.Errorf("missing type: %v", err)
	}
}

func TestCloneIsDeep(t *testing.T) {
	m := full()
	c := m.Clone()
	c.Data[0] = 1
	c.Header["X-A"][0] = "changed"
	c.Extensions["tenant"] = "other"
	if m.Data[0] != 0xff || m.Header["X-A"][0] != "1" || m.Extensions["tenant"] != "acme" {
		t.Fatal("Clone shares memory with the original")
	}
}

func TestCheckSize(t *testing.T) {
	m := full()
	limit := m.Size()
	if err := driver.CheckSize([]*driver.Message{m}, limit); err != nil {
		t.Fatalf("a message of exactly the limit was refused: %v", err)
	}
	m.Data = append(m.Data, 0)
	err := driver.CheckSize([]*driver.Message{m}, limit)
	var tl *driver.TooLargeError
	if !errors.Is(err, driver.ErrTooLarge) || !errors.As(err, &tl) || tl.Size != limit+1 || tl.Limit != limit {
		t.Fatalf("one byte over: %v", err)
	}
}

func TestDestinations(t *testing.T) {
	for _, tc := range []struct {
		got  driver.Destination
		want string
	}{
		{driver.NewDestination(driver.Event, "order.created"), "events.order.created"},
		{driver.NewDestination(driver.Command, "billing", "charge"), "commands.billing.charge"},
		{driver.NewDestination(driver.Query, "catalog", "price.get"), "queries.catalog.price.get"},
		{driver.NewDestination(driver.Stream, "clicks"), "streams.clicks"},
		{driver.NewDestination(driver.Broadcast, "cache.flush"), "broadcast.cache.flush"},
		{driver.DeadLetterOf(driver.NewDestination(driver.Event, "x")), "deadletter.events.x"},
	} {
		if tc.got.Name != tc.want {
			t.Errorf("got %q, want %q", tc.got.Name, tc.want)
		}
	}
	if s := driver.Pattern(42).String(); s != "pattern(42)" {
		t.Errorf("unknown pattern prints %q", s)
	}
}

func ExampleMessage_EachAttribute() {
	m := &driver.Message{ID: "1", Source: "shop", Type: "order.created", CorrelationID: "c-9"}
	m.EachAttribute(func(name, value string) {
		// A driver writes each attribute as a header, e.g. "ce-" + name on NATS.
		fmt.Printf("ce-%s: %s\n", name, value)
	})
	// Output:
	// ce-specversion: 1.0
	// ce-id: 1
	// ce-source: shop
	// ce-type: order.created
	// ce-correlationid: c-9
}
