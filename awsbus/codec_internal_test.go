package awsbus

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

func wireAttrs(w *wireMessage) map[string]string {
	a := make(map[string]string, len(w.attrs))
	for _, x := range w.attrs {
		a[x.name] = x.value
	}
	return a
}

func roundTrip(t *testing.T, m *driver.Message) (*wireMessage, *driver.Message) {
	t.Helper()
	w, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.attrs) > maxAttributes {
		t.Errorf("%d message attributes, SQS allows %d", len(w.attrs), maxAttributes)
	}
	got, err := decode(w.body, wireAttrs(w))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return w, got
}

func checkSame(t *testing.T, want, got *driver.Message) {
	t.Helper()
	if want.ID != got.ID || want.Source != got.Source || want.Type != got.Type || want.Subject != got.Subject ||
		want.DataContentType != got.DataContentType || want.DataSchema != got.DataSchema ||
		want.CorrelationID != got.CorrelationID || want.CausationID != got.CausationID ||
		want.TraceParent != got.TraceParent || want.TraceState != got.TraceState || want.ReplyTo != got.ReplyTo ||
		want.Key != got.Key || !want.Time.Equal(got.Time) || !bytes.Equal(want.Data, got.Data) ||
		!maps.Equal(want.Extensions, got.Extensions) || !maps.EqualFunc(want.Header, got.Header, slices.Equal) ||
		want.Mode != got.Mode {
		t.Errorf("round trip changed the message:\n got %+v\nwant %+v", got, want)
	}
}

// TestEncodeFitsTenAttributes: a message with every attribute, more than ten,
// keeps the first nine as ce- attributes and the rest in the meta attribute.
func TestEncodeFitsTenAttributes(t *testing.T) {
	m := &driver.Message{
		ID: "id-1", Source: "/src", Type: "t.one", Subject: "s", Time: time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC),
		DataContentType: "text/plain", DataSchema: "https://schema", CorrelationID: "c", CausationID: "k",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "a=b", ReplyTo: "replies.x",
		Extensions: map[string]string{"tenant": "acme", "empty": ""}, Key: "k1",
		Header: map[string][]string{"X-Multi": {"a", "b"}}, Data: []byte("hello\nworld\t☕"),
	}
	w, got := roundTrip(t, m)
	checkSame(t, m, got)
	a := wireAttrs(w)
	for _, name := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "eventbus"} {
		if _, ok := a[name]; !ok {
			t.Errorf("attribute %s missing: %v", name, a)
		}
	}
	if len(w.attrs) != maxAttributes {
		t.Errorf("%d attributes, want the full %d", len(w.attrs), maxAttributes)
	}
	if w.body != string(m.Data) {
		t.Errorf("text data should be the body as it is, got %q", w.body)
	}
}

// TestEncodeExtensionsBeforeTime: the extensions a filter names travel as
// attributes of their own (which a filter policy sees) ahead of time,
// datacontenttype and the bus's own extensions, which give way to them.
func TestEncodeExtensionsBeforeTime(t *testing.T) {
	m := &driver.Message{
		ID: "id-1", Source: "/src", Type: "t.one", Subject: "s", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		DataContentType: "application/json", CorrelationID: "c", CausationID: "k",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Extensions:  map[string]string{"tenant": "acme", "region": "eu", "zone": "z"}, Key: "k1", Data: []byte("{}"),
	}
	w, got := roundTrip(t, m)
	checkSame(t, m, got)
	var names []string
	for _, a := range w.attrs {
		names = append(names, a.name)
	}
	want := []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-region", "ce-tenant", "ce-zone",
		"ce-time", "eventbus"}
	if !slices.Equal(names, want) {
		t.Errorf("attributes %v\nwant %v", names, want)
	}
}

// TestEncodeSmallHasNoMeta: an ordinary event is pure ce- attributes and a
// body, what any CloudEvents-minded reader expects.
func TestEncodeSmallHasNoMeta(t *testing.T) {
	m := &driver.Message{ID: "1", Source: "/s", Type: "t", Data: []byte(`{"a":1}`), DataContentType: "application/json"}
	w, got := roundTrip(t, m)
	checkSame(t, m, got)
	if _, ok := wireAttrs(w)[metaAttribute]; ok || len(w.attrs) != 5 {
		t.Errorf("attributes %v, want the five ce- attributes alone", wireAttrs(w))
	}
}

func TestEncodeBodies(t *testing.T) {
	for name, data := range map[string][]byte{
		"binary": {0, 0xff, 0xfe, '\r', '\n'},
		"cr":     []byte("a\r\nb"),
		"empty":  {},
		"nil":    nil,
		"text":   []byte("plain ☕ text"),
	} {
		t.Run(name, func(t *testing.T) {
			m := &driver.Message{ID: "1", Source: "/s", Type: "t", Data: data}
			w, got := roundTrip(t, m)
			if !bytes.Equal(got.Data, data) {
				t.Errorf("data %q, want %q", got.Data, data)
			}
			if w.body == "" {
				t.Error("empty body: SQS refuses it")
			}
		})
	}
}

func TestEncodeStructured(t *testing.T) {
	for name, data := range map[string][]byte{
		"json":    []byte(`{"a":[1,2],"b":"<&>"}`),
		"spaced":  []byte(`{ "a": 1 }`),
		"binary":  {0, 1, 2, 0xff},
		"nodata":  nil,
		"jsonstr": []byte(`"just a string"`),
	} {
		t.Run(name, func(t *testing.T) {
			m := &driver.Message{ID: "1", Source: "/s", Type: "t", DataContentType: "application/json", Data: data,
				Key: "k", Header: map[string][]string{"H": {"v"}}, Extensions: map[string]string{"e": "x"}, Mode: driver.Structured}
			if name == "binary" {
				m.DataContentType = "application/octet-stream"
			}
			w, got := roundTrip(t, m)
			checkSame(t, m, got)
			if !strings.HasPrefix(wireAttrs(w)[contentTypeAttribute], "application/cloudevents+json") {
				t.Errorf("attributes %v lack the structured content type", wireAttrs(w))
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	for name, c := range map[string]struct {
		body  string
		attrs map[string]string
	}{
		"no attributes":  {"hello", nil},
		"missing id":     {"x", map[string]string{"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}},
		"bad time":       {"x", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-time": "yesterday"}},
		"bad meta":       {"x", map[string]string{"ce-specversion": "1.0", "eventbus": "{"}},
		"bad base64":     {"!!", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "eventbus": `{"enc":"base64"}`}},
		"bad structured": {`{"specversion": 1`, map[string]string{"content-type": structuredType}},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := decode(c.body, c.attrs)
			if err == nil {
				t.Fatalf("decoded %+v without error", m)
			}
			if m == nil || m.Data == nil {
				t.Errorf("a malformed message keeps its body as Data, got %+v", m)
			}
		})
	}
}
