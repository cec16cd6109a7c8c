package driver_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/marty-msf/eventbus/driver"
)

func TestStructuredRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	for name, m := range map[string]*driver.Message{
		"json data": {ID: "1", Source: "orders", Type: "order.placed", Time: at, DataContentType: "application/json",
			Subject: "Zürich ✓", Key: "k-1", CorrelationID: "c", Extensions: map[string]string{"tenant": "acme \"q\""}, Data: []byte(`{"n":1}`)},
		"binary data": {ID: "2", Source: "s", Type: "t", DataContentType: "application/octet-stream", Data: []byte{0, 1, 2, 255}},
		"text data":   {ID: "3", Source: "s", Type: "t", DataContentType: "text/plain", Data: []byte("hello")},
		"no data":     {ID: "4", Source: "s", Type: "t"},
	} {
		t.Run(name, func(t *testing.T) {
			body := driver.EncodeStructured(m)
			if !json.Valid(body) {
				t.Fatalf("not JSON: %s", body)
			}
			got, err := driver.DecodeStructured(body)
			if err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			want := m.Clone()
			want.Mode = driver.Structured
			if !want.Time.IsZero() {
				want.Time = want.Time.UTC()
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip of %s:\n got %+v\nwant %+v", body, got, want)
			}
		})
	}
}

// The official SDK's JSON event format reads as the same event, and the SDK
// reads ours.
func TestStructuredInteropWithTheSDK(t *testing.T) {
	e := cloudevents.NewEvent()
	e.SetID("sdk-1")
	e.SetSource("/sdk")
	e.SetType("order.placed")
	e.SetSubject("Zürich ✓")
	e.SetExtension("tenant", "acme")
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	m, err := driver.DecodeStructured(body)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "sdk-1" || m.Subject != "Zürich ✓" || m.Extensions["tenant"] != "acme" || string(m.Data) != `{"n":1}` {
		t.Fatalf("decoded %+v", m)
	}

	var back cloudevents.Event
	if err := json.Unmarshal(driver.EncodeStructured(m), &back); err != nil {
		t.Fatal(err)
	}
	if back.ID() != "sdk-1" || back.Subject() != "Zürich ✓" || back.Extensions()["tenant"] != "acme" || string(back.Data()) != `{"n":1}` {
		t.Fatalf("the SDK read %v", back)
	}
}

func TestDecodeStructuredRefusesWhatIsNoEvent(t *testing.T) {
	for name, body := range map[string]string{
		"not json":         `{"id":`,
		"no specversion":   `{"id":"1","source":"s","type":"t"}`,
		"no id":            `{"specversion":"1.0","source":"s","type":"t"}`,
		"bad base64":       `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"%%"}`,
		"object attribute": `{"specversion":"1.0","id":"1","source":"s","type":"t","subject":{}}`,
	} {
		m, err := driver.DecodeStructured([]byte(body))
		if !errors.Is(err, driver.ErrMalformed) || string(m.Data) != body {
			t.Errorf("%s: %v, data %q", name, err, m.Data)
		}
	}
}
