package natsbus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"
	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

// Interoperability with the official CloudEvents Go SDK's NATS protocol
// bindings, both ways: protocol/nats (core NATS; structured mode only, the
// JSON event format as the body with no header at all) and
// protocol/nats_jetstream (binary mode with "ce-" headers, or structured
// mode, again with no header).

// nonASCII is an attribute and extension value that needs percent-encoding
// in a NATS header.
const nonASCII = "Zürich ✓"

var interopTime = time.Date(2026, 11, 23, 9, 30, 0, 123456000, time.UTC)

func sdkEvent(t *testing.T, id string) event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID(id)
	ev.SetSource("/sdk/source")
	ev.SetType("sdk.created")
	ev.SetSubject(nonASCII)
	ev.SetTime(interopTime)
	ev.SetExtension("correlationid", "corr-sdk")
	ev.SetExtension("tenant", nonASCII)
	ev.SetExtension("partitionkey", "k-7")
	if err := ev.SetData(event.ApplicationJSON, map[string]int{"n": 7}); err != nil {
		t.Fatal(err)
	}
	return ev
}

// checkFromSDK compares what our driver received with the SDK's event.
func checkFromSDK(t *testing.T, what string, d *driver.Delivery, ev event.Event, mode driver.ContentMode) {
	t.Helper()
	if d.Err != nil {
		t.Fatalf("%s: our driver cannot read the SDK's event: %v", what, d.Err)
	}
	m := d.Message
	var data map[string]int
	if err := json.Unmarshal(m.Data, &data); err != nil || data["n"] != 7 {
		t.Errorf("%s: data %q, want {\"n\":7}", what, m.Data)
	}
	for _, c := range []struct{ name, got, want string }{
		{"id", m.ID, ev.ID()},
		{"source", m.Source, ev.Source()},
		{"type", m.Type, ev.Type()},
		{"subject", m.Subject, nonASCII},
		{"datacontenttype", m.DataContentType, event.ApplicationJSON},
		{"correlationid", m.CorrelationID, "corr-sdk"},
		{"tenant", m.Extensions["tenant"], nonASCII},
		{"key", m.Key, "k-7"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s = %q, want %q", what, c.name, c.got, c.want)
		}
	}
	if !m.Time.Equal(interopTime) {
		t.Errorf("%s: time %v, want %v", what, m.Time, interopTime)
	}
	if len(m.Header) != 0 {
		t.Errorf("%s: free headers %v, want none", what, m.Header)
	}
	if m.Mode != mode {
		t.Errorf("%s: Mode %d, want %d", what, m.Mode, mode)
	}
}

// TestSDKJetStreamSenderToUs: the SDK's JetStream sender, in binary and in
// structured mode, into a stream of ours; our subscription reads both.
func TestSDKJetStreamSenderToUs(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Event, "interop", "sdk")
	sub := subscribeT(t, d, dest, driver.SubscribeOptions{Group: "interop"})
	sender, err := cejs.NewSenderFromConn(nc, d.StreamName(driver.Event), dest.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(ctx)
	for _, c := range []struct {
		mode driver.ContentMode
		ctx  context.Context
	}{
		{driver.Binary, ctx},
		{driver.Structured, binding.WithForceStructured(ctx)},
	} {
		ev := sdkEvent(t, "sdk-js-"+modeName(c.mode))
		if err := sender.Send(c.ctx, binding.ToMessage(&ev)); err != nil {
			t.Fatal(err)
		}
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkFromSDK(t, "nats_jetstream "+modeName(c.mode), ds[0], ev, c.mode)
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSDKCoreSenderToUs: the SDK's core NATS sender (structured mode, no
// header) to a core NATS subscription of ours.
func TestSDKCoreSenderToUs(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Broadcast, "interop")
	sub := subscribeT(t, d, dest, driver.SubscribeOptions{})
	sender, err := cenats.NewSenderFromConn(nc, dest.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(ctx)
	ev := sdkEvent(t, "sdk-core")
	if err := sender.Send(ctx, binding.ToMessage(&ev)); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkFromSDK(t, "nats", ds[0], ev, driver.Structured)
}

func ourEvent(id string, mode driver.ContentMode) *driver.Message {
	return &driver.Message{
		ID: id, Source: "/orders/eu-west", Type: "order.created", Subject: nonASCII,
		Time: interopTime, DataContentType: "application/json", DataSchema: "https://example.com/order.json",
		CorrelationID: "corr-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Extensions: map[string]string{"tenant": nonASCII, "region": "eu"},
		Key:        "order-42",
		Data:       []byte(`{"order":42}`),
		Mode:       mode,
	}
}

// checkFromUs compares what the SDK read with what we published. In binary
// mode, v2.16.2 of the SDK's nats_jetstream binding does not percent-decode
// header values, which the NATS protocol binding requires of receivers (and
// requires senders to percent-encode non-ASCII characters and spaces): a
// value that needed encoding reaches it encoded, so for those the encoded
// form is accepted too. ASCII values without spaces arrive unchanged.
func checkFromUs(t *testing.T, what string, ev *event.Event, ours *driver.Message) {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Fatalf("%s: the SDK finds our event invalid: %v", what, err)
	}
	ext := func(name string) string {
		v, _ := types.ToString(ev.Extensions()[name])
		return v
	}
	for _, c := range []struct{ name, got, want string }{
		{"specversion", ev.SpecVersion(), "1.0"},
		{"id", ev.ID(), ours.ID},
		{"source", ev.Source(), ours.Source},
		{"type", ev.Type(), ours.Type},
		{"subject", ev.Subject(), ours.Subject},
		{"datacontenttype", ev.DataContentType(), ours.DataContentType},
		{"dataschema", ev.DataSchema(), ours.DataSchema},
		{"correlationid", ext("correlationid"), ours.CorrelationID},
		{"traceparent", ext("traceparent"), ours.TraceParent},
		{"tenant", ext("tenant"), nonASCII},
		{"region", ext("region"), "eu"},
		{"partitionkey", ext("partitionkey"), ours.Key},
		{"data", string(ev.Data()), string(ours.Data)},
	} {
		if c.got != c.want && !(ours.Mode == driver.Binary && c.want == nonASCII && c.got == "Z%C3%BCrich%20%E2%9C%93") {
			t.Errorf("%s: the SDK read %s %q, want %q", what, c.name, c.got, c.want)
		}
	}
	if !ev.Time().Equal(interopTime) {
		t.Errorf("%s: the SDK read time %v, want %v", what, ev.Time(), interopTime)
	}
	if _, ok := ev.Extensions()["natsmsgid"]; ok {
		t.Errorf("%s: the de-duplication header leaked into the event", what)
	}
}

// TestUsToSDKJetStreamConsumer: the SDK's JetStream consumer reads what we
// published to JetStream, in binary and in structured mode.
func TestUsToSDKJetStreamConsumer(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Event, "interop", "ours")
	sent := []*driver.Message{ourEvent("evt-binary", driver.Binary), ourEvent("evt-structured", driver.Structured)}
	if err := d.Publish(ctx, dest, sent); err != nil {
		t.Fatal(err)
	}
	consumer, err := cejs.NewConsumerFromConn(nc, d.StreamName(driver.Event), dest.Name, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inbound, stop := context.WithCancel(ctx)
	opened := make(chan error, 1)
	go func() { opened <- consumer.OpenInbound(inbound) }()
	defer func() {
		stop()
		if err := <-opened; err != nil {
			t.Error(err)
		}
	}()
	for _, ours := range sent {
		bm, err := consumer.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantEnc := binding.EncodingBinary
		if ours.Mode == driver.Structured {
			wantEnc = binding.EncodingStructured
		}
		if enc := bm.ReadEncoding(); enc != wantEnc {
			t.Errorf("%s: the SDK sees encoding %v, want %v", ours.ID, enc, wantEnc)
		}
		ev, err := binding.ToEvent(ctx, bm)
		if err != nil {
			t.Fatalf("%s: the SDK cannot read our message: %v", ours.ID, err)
		}
		checkFromUs(t, "nats_jetstream "+modeName(ours.Mode), ev, ours)
		_ = bm.Finish(nil)
	}
}

// TestUsToSDKCoreReceiver: the SDK's core NATS binding, which reads the
// structured mode only, reads what we publish in structured mode.
func TestUsToSDKCoreReceiver(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := ctxFor(t, 20*time.Second)
	dest := driver.NewDestination(driver.Broadcast, "interop", "ours")
	receiver := cenats.NewReceiver()
	got := make(chan binding.Message, 1)
	// The SDK's Receiver hands messages over an unbuffered channel; a
	// goroutine of ours takes them so that the connection's dispatcher never
	// blocks on it.
	go func() {
		m, err := receiver.Receive(ctx)
		if err == nil {
			got <- m
		}
		close(got)
	}()
	if _, err := nc.Subscribe(dest.Name, receiver.MsgHandler); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ours := ourEvent("evt-core", driver.Structured)
	if err := d.Publish(ctx, dest, []*driver.Message{ours}); err != nil {
		t.Fatal(err)
	}
	bm, ok := <-got
	if !ok {
		t.Fatal("the SDK received nothing")
	}
	ev, err := binding.ToEvent(ctx, bm)
	if err != nil {
		t.Fatalf("the SDK cannot read our message: %v", err)
	}
	checkFromUs(t, "nats structured", ev, ours)
}

func modeName(m driver.ContentMode) string {
	if m == driver.Structured {
		return "structured"
	}
	return "binary"
}
