package natsbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

func TestSubjectOf(t *testing.T) {
	valid := []driver.Destination{
		driver.NewDestination(driver.Event, "order", "created"),
		driver.NewDestination(driver.Command, "billing", "charge"),
		driver.NewDestination(driver.Query, "users", "get-by_id"),
		driver.NewDestination(driver.Stream, "clicks"),
		driver.NewDestination(driver.Broadcast, "cache", "flush"),
		driver.NewDestination(driver.Reply, "instance-1"),
		driver.DeadLetterOf(driver.NewDestination(driver.Event, "order", "created")),
	}
	for _, d := range valid {
		got, err := subjectOf(d)
		if err != nil || got != d.Name {
			t.Errorf("subjectOf(%v) = %q, %v; want %q", d, got, err, d.Name)
		}
	}
	invalid := []driver.Destination{
		{Pattern: driver.Event, Name: "events.order created"},
		{Pattern: driver.Event, Name: "events.*"},
		{Pattern: driver.Event, Name: "events.>"},
		{Pattern: driver.Event, Name: "events.a*b"},
		{Pattern: driver.Event, Name: "events..x"},
		{Pattern: driver.Event, Name: "events.x."},
		{Pattern: driver.Event, Name: "events."},
		{Pattern: driver.Event, Name: "events"},
		{Pattern: driver.Event, Name: "commands.billing.charge"},
		{Pattern: driver.Event, Name: "events.tab\there"},
		{Pattern: driver.Pattern(99), Name: "x.y"},
		{Pattern: driver.Event, Name: ""},
	}
	for _, d := range invalid {
		_, err := subjectOf(d)
		var de *DestinationError
		if !errors.As(err, &de) {
			t.Errorf("subjectOf(%q) = %v, want a *DestinationError", d.Name, err)
		}
	}
}

func TestConsumerName(t *testing.T) {
	a := consumerName("billing", "events.order.created")
	if a != consumerName("billing", "events.order.created") {
		t.Fatal("consumerName is not deterministic")
	}
	if !strings.HasPrefix(a, "billing__events_order_created_") {
		t.Errorf("consumerName = %q, want a readable prefix", a)
	}
	seen := map[string]string{}
	for _, pair := range [][2]string{
		{"billing", "events.order.created"},
		{"billing", "events.order_created"},
		{"billing.x", "events.order.created"},
		{"billing_x", "events.order.created"},
		{"a b/c*d>e", "events.x"},
		{strings.Repeat("g", 300), "events.x"},
		{strings.Repeat("g", 300), "events.y"},
	} {
		n := consumerName(pair[0], pair[1])
		if strings.ContainsAny(n, ". /\\*>\t") || len(n) > 120 {
			t.Errorf("consumerName(%q, %q) = %q: forbidden character or too long", pair[0], pair[1], n)
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("consumerName collision: %q for %v and %s", n, pair, prev)
		}
		seen[n] = pair[0] + "|" + pair[1]
	}
}

func TestPercentEncoding(t *testing.T) {
	// The example of the CloudEvents NATS binding, section 3.1.3.2.
	if got := percentEncode("Euro € 😀"); got != "Euro%20%E2%82%AC%20%F0%9F%98%80" {
		t.Errorf("percentEncode = %q", got)
	}
	if got := percentEncode(`a"b%c`); got != "a%22b%25c" {
		t.Errorf("percentEncode = %q", got)
	}
	for in, want := range map[string]string{
		"Euro%20%E2%82%AC%20%F0%9F%98%80": "Euro € 😀",
		"lower%e2%82%ac":                  "lower€",
		`"quoted \"old\" value"`:          `quoted "old" value`,
		"plain":                           "plain",
		"100%":                            "100%",
		"%zz":                             "%zz",
	} {
		got, err := headerValue(in)
		if err != nil || got != want {
			t.Errorf("headerValue(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// An overlong encoding of a space is not UTF-8 and must be refused.
	if _, err := headerValue("%C0%A0"); err == nil {
		t.Error("headerValue accepted an overlong UTF-8 sequence")
	}
}

func fullMessage() *driver.Message {
	return &driver.Message{
		ID: "id-1", Source: "/src", Type: "t.created", Subject: "sub ject é",
		Time:            time.Date(2026, 11, 23, 10, 0, 0, 987654321, time.UTC),
		DataContentType: "application/json", DataSchema: "https://schema",
		CorrelationID: "c", CausationID: "ca", TraceParent: "tp", TraceState: "ts", ReplyTo: "replies.i1",
		Extensions: map[string]string{"tenant": "acme", driver.ExtDeadLetterReason: "boom: 100% \"bad\""},
		Key:        "key 1",
		Header:     map[string][]string{"X-Multi": {"a", "b"}, "Authorization-Like": {"v"}},
		Data:       []byte{0, 1, 2, 255},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := fullMessage()
	nm := encode("events.t.created", in, true, true)
	if got := nm.Header.Get("ce-specversion"); got != "1.0" {
		t.Errorf("ce-specversion = %q", got)
	}
	if got := nm.Header.Get("ce-datacontenttype"); got != "application/json" {
		t.Errorf("ce-datacontenttype = %q", got)
	}
	if got := nm.Header.Get("ce-partitionkey"); got != "key%201" {
		t.Errorf("ce-partitionkey = %q", got)
	}
	if got, want := nm.Header.Get(msgIDHeader), dedupID(in.Source, in.ID, "events.t.created", ""); got != want || len(got) != 32 {
		t.Errorf("Nats-Msg-Id = %q, want %q (32 hex digits)", got, want)
	}
	for _, mode := range []driver.ContentMode{driver.Binary, driver.Structured} {
		in := fullMessage()
		in.Mode = mode
		if got := encode("events.t.created", in, true, false).Header.Values(msgIDHeader); len(got) != 0 {
			t.Errorf("mode %d: a stored message without de-duplication carries Nats-Msg-Id %q", mode, got)
		}
		if got := encode("events.t.created", in, true, true).Header.Get(msgIDHeader); len(got) != 32 {
			t.Errorf("mode %d: a de-duplicated message carries Nats-Msg-Id %q, want 32 hex digits", mode, got)
		}
	}
	for k, vs := range nm.Header {
		for _, v := range vs {
			if strings.HasPrefix(k, "ce-") && strings.ContainsAny(v, " \"\r\n") {
				t.Errorf("header %s=%q is not percent-encoded", k, v)
			}
		}
	}
	// The wire copy is independent of the caller's message.
	in.Data[0] = 42
	in.Header["X-Multi"][0] = "changed"
	if nm.Data[0] != 0 || nm.Header["X-Multi"][0] != "a" {
		t.Error("encode shares Data or Header with the caller's message")
	}

	out, err := decode(nm.Header, nm.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := fullMessage()
	if !reflect.DeepEqual(out, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, want)
	}
}

func TestDecodeCaseInsensitiveNames(t *testing.T) {
	h := nats.Header{"CE-SpecVersion": {"1.0"}, "Ce-Id": {"x"}, "ce-SOURCE": {"/s"}, "ce-type": {"t"}, "Ce-Partitionkey": {"k"}}
	m, err := decode(h, nil)
	if err != nil || m.ID != "x" || m.Source != "/s" || m.Type != "t" || m.Key != "k" {
		t.Errorf("decode = %+v, %v", m, err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	body := []byte("raw body")
	valid := func() nats.Header {
		return nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"i"}, "ce-source": {"/s"}, "ce-type": {"t"}, "X-Keep": {"k"}}
	}
	cases := map[string]nats.Header{
		"no headers":       nil,
		"no specversion":   func() nats.Header { h := valid(); delete(h, "ce-specversion"); return h }(),
		"bad specversion":  func() nats.Header { h := valid(); h["ce-specversion"] = []string{"0.3"}; return h }(),
		"no id":            func() nats.Header { h := valid(); delete(h, "ce-id"); return h }(),
		"no source":        func() nats.Header { h := valid(); delete(h, "ce-source"); return h }(),
		"no type":          func() nats.Header { h := valid(); delete(h, "ce-type"); return h }(),
		"bad time":         func() nats.Header { h := valid(); h["ce-time"] = []string{"yesterday"}; return h }(),
		"invalid encoding": func() nats.Header { h := valid(); h["ce-subject"] = []string{"%C0%A0"}; return h }(),
	}
	for name, h := range cases {
		m, err := decode(h, body)
		if !errors.Is(err, driver.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if m == nil || string(m.Data) != "raw body" {
			t.Errorf("%s: the raw body is not kept: %+v", name, m)
			continue
		}
		if h != nil && m.Header["X-Keep"] == nil {
			t.Errorf("%s: free headers are not kept", name)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have, want string
		ok         bool
	}{
		{"2.9.10", "2.9.0", true},
		{"2.9.10", "2.10.0", false},
		{"2.15.2", "2.9.0", true},
		{"2.1.9", "2.2.0", false},
		{"2.11.0-RC.1", "2.11.0", true},
		{"3.0", "2.9.0", true},
		{"", "2.2.0", false},
	} {
		if got := versionAtLeast(c.have, c.want); got != c.ok {
			t.Errorf("versionAtLeast(%q, %q) = %v", c.have, c.want, got)
		}
	}
}

func TestDecodeStructured(t *testing.T) {
	ct := nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}, "X-Free": {"f"}}
	cases := []struct {
		name, body string
		want       *driver.Message
	}{
		{"json data", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"a":[1,2]},"partitionkey":"k","count":3,"flag":true}`,
			&driver.Message{ID: "1", Source: "/s", Type: "t", DataContentType: "application/json", Data: []byte(`{"a":[1,2]}`), Key: "k",
				Extensions: map[string]string{"count": "3", "flag": "true"}}},
		{"text data", `{"specversion":"1.0","id":"2","source":"/s","type":"t","datacontenttype":"text/plain","data":"hello \"you\""}`,
			&driver.Message{ID: "2", Source: "/s", Type: "t", DataContentType: "text/plain", Data: []byte(`hello "you"`)}},
		{"base64 data", `{"specversion":"1.0","id":"3","source":"/s","type":"t","time":"2026-01-02T03:04:05Z","data_base64":"AAEC/w=="}`,
			&driver.Message{ID: "3", Source: "/s", Type: "t", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Data: []byte{0, 1, 2, 255}}},
		{"no data", `{"specversion":"1.0","id":"4","source":"/s","type":"t"}`,
			&driver.Message{ID: "4", Source: "/s", Type: "t"}},
	}
	for _, c := range cases {
		got, err := decode(ct, []byte(c.body))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		c.want.Header = map[string][]string{"X-Free": {"f"}}
		c.want.Mode = driver.Structured
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
	for name, body := range map[string]string{
		"not json":       `not json`,
		"no specversion": `{"id":"1","source":"/s","type":"t"}`,
		"no id":          `{"specversion":"1.0","source":"/s","type":"t"}`,
		"bad base64":     `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"%%%"}`,
		"object attr":    `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"x":1}}`,
		"bad time":       `{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"soon"}`,
	} {
		m, err := decode(ct, []byte(body))
		if !errors.Is(err, driver.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if m == nil || string(m.Data) != body {
			t.Errorf("%s: the raw body is not kept: %+v", name, m)
		}
	}
}

func TestNumDelivered(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  int
	}{
		{"$JS.ACK.EVENTS.orders.3.17.5.1700000000000000000.0", 3},
		{"$JS.ACK._.ABCHASH.EVENTS.orders.7.17.5.1700000000000000000.0.rnd", 7},
		{"$JS.ACK.hub.ABCHASH.EVENTS.orders.12.17.5.1700000000000000000.0", 12},
		{"$JS.ACK.EVENTS.orders.x.17.5.1700000000000000000.0", 1},
		{"$JS.ACK.EVENTS.orders.3.17.5.1700000000000000000.0.x", 1},
		{"_INBOX.abc", 1},
		{"", 1},
	} {
		if got := numDelivered(tc.reply); got != tc.want {
			t.Errorf("numDelivered(%q) = %d, want %d", tc.reply, got, tc.want)
		}
	}
}

// TestEncodeStructuredRoundTrip: a message sent in structured mode arrives
// as it left, its data inline when it is JSON and in data_base64 otherwise.
func TestEncodeStructuredRoundTrip(t *testing.T) {
	for name, c := range map[string]struct {
		contentType string
		data        []byte
		inline      bool
	}{
		"json":        {"application/json", []byte(`{"n":[1,2]}`), true},
		"json suffix": {"application/cloudevents-order+json; charset=utf-8", []byte(`"text"`), true},
		"not json":    {"application/json", []byte(`{oops`), false},
		"binary":      {"application/octet-stream", []byte{0, 1, 2, 255}, false},
		"text":        {"text/plain", []byte(`hello "you"`), false},
		"none":        {"", nil, false},
	} {
		in := fullMessage()
		in.Mode = driver.Structured
		in.DataContentType = c.contentType
		in.Data = c.data
		in.Subject = "Zürich ✓ \"quoted\" \\ 100%"
		nm := encode("events.t.created", in, true, true)
		if got := nm.Header.Get(contentType); got != "application/cloudevents+json" {
			t.Errorf("%s: Content-Type %q", name, got)
		}
		for k := range nm.Header {
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				t.Errorf("%s: structured message has header %s", name, k)
			}
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(nm.Data, &fields); err != nil {
			t.Fatalf("%s: body %s: %v", name, nm.Data, err)
		}
		if _, ok := fields["data"]; ok != c.inline {
			t.Errorf("%s: data inline = %v, want %v: %s", name, ok, c.inline, nm.Data)
		}
		out, err := decode(nm.Header, nm.Data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("%s: round trip:\n got %+v\nwant %+v", name, out, in)
		}
	}
}

// TestDecodeHeaderlessStructured: a JSON event format body without any
// header (what the CloudEvents SDK's NATS bindings send) is a structured
// event; other header-less bodies stay malformed.
func TestDecodeHeaderlessStructured(t *testing.T) {
	m, err := decode(nil, []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}`))
	if err != nil || m.ID != "1" || string(m.Data) != `{"a":1}` || m.Mode != driver.Structured {
		t.Errorf("decode = %+v, %v", m, err)
	}
	for _, body := range []string{`{"a":1}`, `plain`, ``} {
		if _, err := decode(nil, []byte(body)); !errors.Is(err, driver.ErrMalformed) {
			t.Errorf("decode(%q) = %v, want ErrMalformed", body, err)
		}
	}
}

// TestExtensionNeverReplacesAttribute: even an envelope that skipped
// CheckEnvelope cannot replace an attribute header through an extension.
func TestExtensionNeverReplacesAttribute(t *testing.T) {
	for _, mode := range []driver.ContentMode{driver.Binary, driver.Structured} {
		in := fullMessage()
		in.Mode = mode
		in.Extensions = map[string]string{"id": "forged", "source": "/forged", "specversion": "0.3", "partitionkey": "forged"}
		m, err := decode(encode("events.x", in, false, false).Header, encode("events.x", in, false, false).Data)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != in.ID || m.Source != in.Source || m.Key != in.Key {
			t.Errorf("mode %d: an extension replaced an attribute: id %q source %q key %q", mode, m.ID, m.Source, m.Key)
		}
	}
}

func BenchmarkDedupID(b *testing.B) {
	for b.Loop() {
		_ = dedupID("/orders/eu-west", "0195f3a2-7c1e-7d3b-9a4f-2b8c1d0e5f6a", "events.order.created", "")
	}
}

// BenchmarkEncode: the envelope the bus fills for an event (id, source,
// type, time) and 256 bytes of data, onto a core NATS message, a stored
// one (at least once) and a stored one with its de-duplication id (exactly
// once).
func BenchmarkEncode(b *testing.B) {
	m := &driver.Message{ID: "0195f3a2-7c1e-7d3b-9a4f-2b8c1d0e5f6a", Source: "/orders/eu-west", Type: "order.created",
		Time: time.Date(2026, 11, 27, 14, 0, 0, 123456789, time.UTC), Data: make([]byte, 256)}
	for _, c := range []struct{ stored, msgID bool }{{false, false}, {true, false}, {true, true}} {
		b.Run(fmt.Sprintf("stored=%v/msgid=%v", c.stored, c.msgID), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = encode("events.order.created", m, c.stored, c.msgID)
			}
		})
	}
}

// BenchmarkDecode reads back what BenchmarkEncode writes.
func BenchmarkDecode(b *testing.B) {
	m := &driver.Message{ID: "0195f3a2-7c1e-7d3b-9a4f-2b8c1d0e5f6a", Source: "/orders/eu-west", Type: "order.created",
		Time: time.Date(2026, 11, 27, 14, 0, 0, 123456789, time.UTC), Data: make([]byte, 256)}
	nm := encode("events.order.created", m, true, true)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decode(nm.Header, nm.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestUnfilled(t *testing.T) {
	for _, tc := range []struct {
		header nats.Header
		want   int
	}{
		{nats.Header{"Status": {"408"}, "Nats-Pending-Messages": {"17"}, "Nats-Pending-Bytes": {"0"}}, 17},
		{nats.Header{"Status": {"408"}, "Nats-Pending-Messages": {"0"}}, 0},
		{nats.Header{"Status": {"408"}}, math.MaxInt},
		{nats.Header{"Status": {"408"}, "Nats-Pending-Messages": {"-3"}}, math.MaxInt},
	} {
		if got := unfilled(&nats.Msg{Header: tc.header}); got != tc.want {
			t.Errorf("unfilled(%v) = %d, want %d", tc.header, got, tc.want)
		}
	}
}
