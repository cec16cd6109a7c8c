package natsbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

// The CloudEvents Go SDK ships no NATS binding that the module proxy serves,
// so these tests put the SDK's own binding machinery (binding.ToEvent,
// binding.ToMessage) on plain nats.go messages, through the small adapters
// below that follow the NATS protocol binding's binary mode: "ce-" headers
// with percent-encoded values, the data as the body.

var ceSpecs = spec.WithPrefix("ce-")

// ceNATSMessage presents a received nats.Msg to the SDK as a binary-mode
// binding.Message.
type ceNATSMessage struct {
	msg     *nats.Msg
	version spec.Version
}

func newCENATSMessage(m *nats.Msg) *ceNATSMessage {
	c := &ceNATSMessage{msg: m}
	for k, v := range m.Header {
		if strings.EqualFold(k, ceSpecs.PrefixedSpecVersionName()) && len(v) > 0 {
			c.version = ceSpecs.Version(v[0])
		}
	}
	return c
}

func (c *ceNATSMessage) ReadEncoding() binding.Encoding {
	if c.version == nil {
		return binding.EncodingUnknown
	}
	return binding.EncodingBinary
}

func (c *ceNATSMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (c *ceNATSMessage) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if c.version == nil {
		return binding.ErrNotBinary
	}
	for k, vs := range c.msg.Header {
		if len(vs) == 0 || len(k) <= 3 || !strings.EqualFold(k[:3], "ce-") {
			continue
		}
		v, err := url.PathUnescape(vs[0])
		if err != nil {
			return err
		}
		if attr := c.version.Attribute(strings.ToLower(k)); attr != nil {
			err = w.SetAttribute(attr, v)
		} else {
			err = w.SetExtension(strings.ToLower(k[3:]), v)
		}
		if err != nil {
			return err
		}
	}
	if len(c.msg.Data) > 0 {
		return w.SetData(bytes.NewReader(c.msg.Data))
	}
	return nil
}

func (c *ceNATSMessage) Finish(error) error { return nil }

func (c *ceNATSMessage) header(name string) any {
	for k, vs := range c.msg.Header {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			v, err := url.PathUnescape(vs[0])
			if err != nil {
				return nil
			}
			return v
		}
	}
	return nil
}

func (c *ceNATSMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	attr := c.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	return attr, c.header(attr.PrefixedName())
}

func (c *ceNATSMessage) GetExtension(name string) any { return c.header("ce-" + name) }

// ceNATSWriter writes an SDK event into a nats.Msg in binary mode.
type ceNATSWriter struct {
	msg *nats.Msg
	// contentTypeHeader puts datacontenttype in Content-Type, as the SDK's
	// HTTP binding does, instead of the NATS binding's ce-datacontenttype.
	contentTypeHeader bool
}

func (w *ceNATSWriter) Start(context.Context) error {
	w.msg.Header = nats.Header{}
	return nil
}

func (w *ceNATSWriter) set(name string, value any) error {
	s, err := types.Format(value)
	if err != nil {
		return err
	}
	w.msg.Header.Set(name, url.PathEscape(s))
	return nil
}

func (w *ceNATSWriter) SetAttribute(attr spec.Attribute, value any) error {
	if value == nil {
		return nil
	}
	if attr.Kind() == spec.DataContentType && w.contentTypeHeader {
		s, _ := types.Format(value)
		w.msg.Header.Set("Content-Type", s)
		return nil
	}
	return w.set("ce-"+attr.Name(), value)
}

func (w *ceNATSWriter) SetExtension(name string, value any) error {
	if value == nil {
		return nil
	}
	return w.set("ce-"+name, value)
}

func (w *ceNATSWriter) SetData(r io.Reader) error {
	b, err := io.ReadAll(r)
	w.msg.Data = b
	return err
}

func (w *ceNATSWriter) End(context.Context) error { return nil }

// TestCloudEventsSDKReadsOurEvents: a plain nats.go subscriber decodes an
// event we published with the CloudEvents Go SDK.
func TestCloudEventsSDKReadsOurEvents(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("events.interop.ours")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	when := time.Date(2026, 11, 23, 9, 30, 0, 123456789, time.UTC)
	ours := &driver.Message{
		ID: "evt-1", Source: "/orders/eu-west", Type: "order.created", Subject: "Euro € 😀 \"quoted\" 100%",
		Time: when, DataContentType: "application/json", DataSchema: "https://example.com/order.json",
		CorrelationID: "corr-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Extensions: map[string]string{"tenant": "acme"},
		Key:        "order-42",
		Header:     map[string][]string{"X-Trace": {"a", "b"}},
		Data:       []byte(`{"order":42}`),
	}
	ctx := ctxFor(t, 10*time.Second)
	if err := d.Publish(ctx, driver.NewDestination(driver.Event, "interop", "ours"), []*driver.Message{ours}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := binding.ToEvent(ctx, newCENATSMessage(m))
	if err != nil {
		t.Fatalf("the SDK cannot read our message: %v (headers %v)", err, m.Header)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("the SDK finds our event invalid: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"specversion", ev.SpecVersion(), "1.0"},
		{"id", ev.ID(), ours.ID},
		{"source", ev.Source(), ours.Source},
		{"type", ev.Type(), ours.Type},
		{"subject", ev.Subject(), ours.Subject},
		{"datacontenttype", ev.DataContentType(), ours.DataContentType},
		{"dataschema", ev.DataSchema(), ours.DataSchema},
		{"correlationid", ext(ev, "correlationid"), ours.CorrelationID},
		{"traceparent", ext(ev, "traceparent"), ours.TraceParent},
		{"tenant", ext(ev, "tenant"), "acme"},
		{"partitionkey", ext(ev, "partitionkey"), ours.Key},
		{"data", string(ev.Data()), string(ours.Data)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: the SDK read %q, want %q", c.name, c.got, c.want)
		}
	}
	if !ev.Time().Equal(when) {
		t.Errorf("time: the SDK read %v, want %v", ev.Time(), when)
	}
	if got := m.Header.Values("X-Trace"); strings.Join(got, ",") != "a,b" {
		t.Errorf("free header X-Trace = %v, want [a b]", got)
	}
}

func ext(ev *event.Event, name string) string {
	v, _ := types.ToString(ev.Extensions()[name])
	return v
}

// TestWeReadCloudEventsSDKEvents: our subscriber receives events that the
// CloudEvents Go SDK wrote onto plain nats.go messages: in binary mode with
// datacontenttype in ce-datacontenttype (the NATS binding) or in Content-Type
// (the SDK's HTTP convention), and in structured mode (the SDK's JSON event
// format, what its NATS sender has long used).
func TestWeReadCloudEventsSDKEvents(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	dest := driver.NewDestination(driver.Event, "interop", "theirs")
	ctx := ctxFor(t, 10*time.Second)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "interop"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	for _, mode := range []string{"binary", "binary-content-type", "structured"} {
		ev := event.New()
		ev.SetID("sdk-" + mode)
		ev.SetSource("/sdk/source")
		ev.SetType("sdk.created")
		ev.SetSubject("Grüße aus Köln")
		ev.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC))
		ev.SetExtension("correlationid", "corr-sdk")
		ev.SetExtension("partitionkey", "k-7")
		if err := ev.SetData(event.ApplicationJSON, map[string]int{"n": 7}); err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: dest.Name}
		if mode == "structured" {
			body, err := format.JSON.Marshal(&ev)
			if err != nil {
				t.Fatal(err)
			}
			msg.Data = body
			msg.Header = nats.Header{"Content-Type": {format.JSON.MediaType()}}
		} else {
			w := &ceNATSWriter{msg: msg, contentTypeHeader: mode == "binary-content-type"}
			if err := w.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := binding.ToMessage(&ev).ReadBinary(ctx, w); err != nil {
				t.Fatal(err)
			}
			if err := w.End(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}

		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := ds[0]
		if got.Err != nil {
			t.Fatalf("%s: our driver cannot read the SDK's event: %v", mode, got.Err)
		}
		m := got.Message
		var data map[string]int
		if err := json.Unmarshal(m.Data, &data); err != nil || data["n"] != 7 {
			t.Errorf("%s: data %q, want {\"n\":7}", mode, m.Data)
		}
		for _, c := range []struct{ name, got, want string }{
			{"id", m.ID, ev.ID()},
			{"source", m.Source, ev.Source()},
			{"type", m.Type, ev.Type()},
			{"subject", m.Subject, ev.Subject()},
			{"datacontenttype", m.DataContentType, event.ApplicationJSON},
			{"correlationid", m.CorrelationID, "corr-sdk"},
			{"key", m.Key, "k-7"},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %q, want %q", mode, c.name, c.got, c.want)
			}
		}
		if !m.Time.Equal(ev.Time()) {
			t.Errorf("time %v, want %v", m.Time, ev.Time())
		}
		if len(m.Header) != 0 {
			t.Errorf("free headers %v, want none", m.Header)
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
}
