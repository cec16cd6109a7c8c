package telemetry_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tracing returns a tracer provider whose spans the recorder keeps.
func tracing(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// waitFor polls cond until it holds, for at most 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spanNamed returns the ended span with that name.
func spanNamed(t *testing.T, sr *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	waitFor(t, "span "+name, func() bool {
		for _, s := range sr.Ended() {
			if s.Name() == name {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, a := range s.Attributes() {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

func newBus(t *testing.T, d driver.Driver, opts *eventbus.Options) *eventbus.Bus {
	t.Helper()
	bus := eventbus.New(opts)
	if err := bus.Register("main", d); err != nil {
		t.Fatal(err)
	}
	return bus
}

func closeBus(t *testing.T, bus *eventbus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Close(ctx); err != nil {
		t.Error(err)
	}
}

// chain publishes order.placed under a test span; its handler publishes
// order.shipped with its context; it checks that the four spans form one
// trace: test → send placed → process placed → send shipped → process
// shipped, each process span linked to its producer, and that the second
// message carries causation and correlation ids.
func chain(t *testing.T, d driver.Driver, system string) {
	tp, sr := tracing(t)
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, d, &eventbus.Options{Observer: obs, Source: "shop"})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var placedTrace trace.SpanContext
	_, err = bus.SubscribeEvents(ctx, []string{"order.placed"}, "shipping", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		placedTrace = trace.SpanContextFromContext(ctx)
		next := &eventbus.Message{Type: "order.shipped", Data: []byte(`{}`)}
		return bus.PublishEvent(ctx, next)
	}))
	if err != nil {
		t.Fatal(err)
	}
	shipped := make(chan *eventbus.Message, 1)
	_, err = bus.SubscribeEvents(ctx, []string{"order.shipped"}, "billing", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		shipped <- m
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	root, rootSpan := tp.Tracer("test").Start(ctx, "checkout")
	first := &eventbus.Message{ID: "order-1", Type: "order.placed", CorrelationID: "checkout-7", Data: []byte(`{}`)}
	if err := bus.PublishEvent(root, first); err != nil {
		t.Fatal(err)
	}
	rootSpan.End()
	var second *eventbus.Message
	select {
	case second = <-shipped:
	case <-ctx.Done():
		t.Fatal("order.shipped not handled")
	}
	if second.CausationID != "order-1" || second.CorrelationID != "checkout-7" {
		t.Errorf("causation %q, correlation %q; want order-1, checkout-7", second.CausationID, second.CorrelationID)
	}

	sendPlaced := spanNamed(t, sr, "send events.order.placed")
	processPlaced := spanNamed(t, sr, "process events.order.placed")
	sendShipped := spanNamed(t, sr, "send events.order.shipped")
	processShipped := spanNamed(t, sr, "process events.order.shipped")
	traceID := rootSpan.SpanContext().TraceID()
	for _, c := range []struct {
		span   sdktrace.ReadOnlySpan
		kind   trace.SpanKind
		parent trace.SpanContext
	}{
		{sendPlaced, trace.SpanKindProducer, rootSpan.SpanContext()},
		{processPlaced, trace.SpanKindConsumer, sendPlaced.SpanContext()},
		{sendShipped, trace.SpanKindProducer, processPlaced.SpanContext()},
		{processShipped, trace.SpanKindConsumer, sendShipped.SpanContext()},
	} {
		if got := c.span.SpanContext().TraceID(); got != traceID {
			t.Errorf("%s: trace %s, want %s", c.span.Name(), got, traceID)
		}
		if c.span.SpanKind() != c.kind {
			t.Errorf("%s: kind %v, want %v", c.span.Name(), c.span.SpanKind(), c.kind)
		}
		if got := c.span.Parent().SpanID(); got != c.parent.SpanID() {
			t.Errorf("%s: parent %s, want %s", c.span.Name(), got, c.parent.SpanID())
		}
		if sys := attr(c.span, "messaging.system"); sys != system {
			t.Errorf("%s: messaging.system %q, want %q", c.span.Name(), sys, system)
		}
	}
	for _, c := range []struct{ process, send sdktrace.ReadOnlySpan }{{processPlaced, sendPlaced}, {processShipped, sendShipped}} {
		links := c.process.Links()
		if len(links) != 1 || links[0].SpanContext.SpanID() != c.send.SpanContext().SpanID() {
			t.Errorf("%s: links %v, want one to %s", c.process.Name(), links, c.send.SpanContext().SpanID())
		}
	}
	if placedTrace.SpanID() != processPlaced.SpanContext().SpanID() {
		t.Errorf("the handler's context carries span %s, want its process span %s", placedTrace.SpanID(), processPlaced.SpanContext().SpanID())
	}
	if got := attr(processPlaced, "messaging.message.id"); got != "order-1" {
		t.Errorf("messaging.message.id %q, want order-1", got)
	}
	if got := attr(processPlaced, "messaging.consumer.group.name"); got != "shipping" {
		t.Errorf("messaging.consumer.group.name %q, want shipping", got)
	}
	if got := attr(sendShipped, "messaging.message.conversation_id"); got != "checkout-7" {
		t.Errorf("conversation id %q, want checkout-7", got)
	}
}

func TestTraceChainMembus(t *testing.T) {
	chain(t, membus.New(nil), "eventbus.memory")
}

// startNATS starts an embedded NATS server with JetStream, shut down when
// the test ends, and opens a driver on it.
func startNATS(t *testing.T) (*natsbus.Server, *natsbus.Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, d
}

func TestTraceChainNATS(t *testing.T) {
	_, d := startNATS(t)
	chain(t, d, "nats")
}

// A batch handler's span links to every message's producer; a query is a
// client span and its handler a server span in the same trace.
func TestBatchAndQuerySpans(t *testing.T) {
	tp, sr := tracing(t)
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan int, 1)
	_, err = bus.ProcessStream(ctx, "clicks", "stats", eventbus.BatchHandlerFunc(func(ctx context.Context, ms []*eventbus.Message) error {
		got <- len(ms)
		return nil
	}), &eventbus.BatchOptions{Size: 3, MaxWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bus.HandleQuery(ctx, "prices", "price.get", eventbus.QueryHandlerFunc(func(ctx context.Context, m *eventbus.Message) (*eventbus.Message, error) {
		return &eventbus.Message{Data: []byte(`{"price":3}`)}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var sends []trace.SpanContext
	for i := range 3 {
		pctx, span := tp.Tracer("test").Start(ctx, "click")
		if err := bus.PublishStream(pctx, "clicks", &eventbus.Message{Type: "click", Key: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
		span.End()
		sends = append(sends, span.SpanContext())
	}
	if n := <-got; n != 3 {
		t.Fatalf("batch of %d, want 3", n)
	}
	batch := spanNamed(t, sr, "process_batch streams.clicks")
	if len(batch.Links()) != 3 {
		t.Fatalf("batch span has %d links, want 3", len(batch.Links()))
	}
	for i, l := range batch.Links() {
		if l.SpanContext.TraceID() != sends[i].TraceID() {
			t.Errorf("link %d to trace %s, want %s", i, l.SpanContext.TraceID(), sends[i].TraceID())
		}
	}
	if _, err := bus.Query(ctx, "prices", &eventbus.Message{Type: "price.get"}); err != nil {
		t.Fatal(err)
	}
	client := spanNamed(t, sr, "query queries.prices.price.get")
	server := spanNamed(t, sr, "answer queries.prices.price.get")
	if client.SpanKind() != trace.SpanKindClient || server.SpanKind() != trace.SpanKindServer {
		t.Errorf("kinds %v / %v, want client / server", client.SpanKind(), server.SpanKind())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() {
		t.Errorf("answer's parent %s, want the query span %s", server.Parent().SpanID(), client.SpanContext().SpanID())
	}
}

// Without an Observer the publish and handling paths are unchanged; an
// Observer without providers records nothing but still fills causation.
func TestObserverWithoutProviders(t *testing.T) {
	obs, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var out []*eventbus.Message
	var n atomic.Int32
	_, err = bus.SubscribeEvents(ctx, []string{"a", "b"}, "g", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		mu.Lock()
		out = append(out, m)
		mu.Unlock()
		n.Add(1)
		if m.Type == "a" {
			return bus.PublishEvent(ctx, &eventbus.Message{Type: "b"})
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishEvent(ctx, &eventbus.Message{ID: "a-1", Type: "a"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both handled", func() bool { return n.Load() == 2 })
	mu.Lock()
	defer mu.Unlock()
	b := out[1]
	if b.TraceParent != "" || b.CausationID != "a-1" || b.CorrelationID != "a-1" {
		t.Errorf("traceparent %q causation %q correlation %q; want none, a-1, a-1", b.TraceParent, b.CausationID, b.CorrelationID)
	}
}

var errFlaky = errors.New("flaky")
