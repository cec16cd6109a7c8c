package saga_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus/saga"
)

// The trace context of Start's span is persisted with the instance in
// either store, so that every later transition continues it.
func TestTraceContextPersisted(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(t *testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{})
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
			SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
			TraceFlags: trace.FlagsSampled,
		})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		id, err := w.orc.Start(ctx, "order", orderData{Order: "o-trace", Amount: 1}, saga.WithID("trace-1"))
		if err != nil {
			t.Fatal(err)
		}
		in := w.wait(id)
		if in.State != saga.Completed {
			t.Fatalf("saga %s, want completed", in.State)
		}
		if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; in.TraceParent != want {
			t.Errorf("trace parent %q, want %q", in.TraceParent, want)
		}
		plain, err := w.orc.Start(context.Background(), "order", orderData{Order: "o-plain", Amount: 1}, saga.WithID("trace-2"))
		if err != nil {
			t.Fatal(err)
		}
		if in := w.wait(plain); in.TraceParent != "" || in.TraceState != "" {
			t.Errorf("a saga started without a span persisted trace context %q %q", in.TraceParent, in.TraceState)
		}
	})
}
