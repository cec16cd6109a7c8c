package telemetry_test

import (
	"context"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/telemetry"
)

// The trace continues through the CloudEvents distributed-tracing extension
// both ways: the official SDK reads the traceparent of what we publish, and
// our handler's span continues the traceparent of what the SDK sends.
func TestTraceThroughCloudEventsSDK(t *testing.T) {
	srv, d := startNATS(t)
	tp, sr := tracing(t)
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, d, &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	handled := make(chan trace.SpanContext, 1)
	_, err = bus.SubscribeBroadcast(ctx, []string{"sdk.sent"}, eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		handled <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Us to the SDK: its core NATS binding reads the structured mode.
	receiver := cenats.NewReceiver()
	got := make(chan binding.Message, 1)
	go func() {
		m, err := receiver.Receive(ctx)
		if err == nil {
			got <- m
		}
		close(got)
	}()
	if _, err := nc.Subscribe("broadcast.ours", receiver.MsgHandler); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := bus.Broadcast(ctx, &eventbus.Message{Type: "ours", Mode: eventbus.Structured, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	bm, ok := <-got
	if !ok {
		t.Fatal("the SDK received nothing")
	}
	ev, err := binding.ToEvent(ctx, bm)
	if err != nil {
		t.Fatal(err)
	}
	send := spanNamed(t, sr, "send broadcast.ours")
	tpExt, _ := ev.Extensions()["traceparent"].(string)
	want := "00-" + send.SpanContext().TraceID().String() + "-" + send.SpanContext().SpanID().String() + "-01"
	if tpExt != want {
		t.Errorf("the SDK reads traceparent %q, want %q", tpExt, want)
	}

	// The SDK to us: a traceparent set by another CloudEvents producer.
	sdkCtx, sdkSpan := tp.Tracer("sdk").Start(ctx, "sdk producer")
	sdkSpan.End()
	sc := sdkSpan.SpanContext()
	sender, err := cenats.NewSenderFromConn(nc, "broadcast.sdk.sent")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(sdkCtx)
	out := event.New()
	out.SetID("sdk-1")
	out.SetSource("/sdk")
	out.SetType("sdk.sent")
	out.SetExtension("traceparent", "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01")
	if err := out.SetData(event.ApplicationJSON, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, binding.ToMessage(&out)); err != nil {
		t.Fatal(err)
	}
	var hsc trace.SpanContext
	select {
	case hsc = <-handled:
	case <-ctx.Done():
		t.Fatal("the SDK's event was not handled")
	}
	process := spanNamed(t, sr, "process broadcast.sdk.sent")
	if hsc.TraceID() != sc.TraceID() || process.Parent().SpanID() != sc.SpanID() {
		t.Errorf("handler span in trace %s with parent %s, want trace %s and parent %s", hsc.TraceID(), process.Parent().SpanID(), sc.TraceID(), sc.SpanID())
	}
}
