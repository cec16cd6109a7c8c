package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
	"github.com/marty-msf/eventbus/telemetry"
)

// A saga's end event carries its start time, so its duration is recorded
// by a process that never saw it start (another orchestrator instance, or
// one restarted since).
func TestSagaDurationFromTheEndEventAlone(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	obs, err := telemetry.New(&telemetry.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{"saga_id": "s-1", "saga": "order", "state": "completed", "started": time.Now().Add(-3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishEvent(ctx, &eventbus.Message{Type: "saga.completed", DataContentType: "application/json", Data: data}); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != telemetry.MetricSagaDuration {
				continue
			}
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok || len(h.DataPoints) != 1 || h.DataPoints[0].Count != 1 || h.DataPoints[0].Sum < 3 || h.DataPoints[0].Sum > 60 {
				t.Fatalf("saga duration: %+v", m.Data)
			}
			return
		}
	}
	t.Fatalf("no %s metric recorded", telemetry.MetricSagaDuration)
}

// sagaServices is an orchestrator and three participant services
// (inventory, payment, shipping), each on a bus of its own with its own
// Observer and tracer provider, all on one membus broker and one span
// recorder.
type sagaServices struct {
	sr     *tracetest.SpanRecorder
	broker *membus.Driver
	store  saga.Store
	orc    *saga.Orchestrator
	tp     *sdktrace.TracerProvider // the orchestrator's
	// shipFails makes shipping.ship fail for good for that saga id.
	shipFails string
}

var sagaSteps = [][3]string{
	{"inventory", "inventory.reserve", "inventory.release"},
	{"payment", "payment.charge", "payment.refund"},
	{"shipping", "shipping.ship", "shipping.cancel"},
}

func sagaDefinition() saga.Definition {
	d := saga.Definition{Name: "order"}
	for _, s := range sagaSteps {
		d.Steps = append(d.Steps, saga.Step{Name: s[0], Service: s[0], Command: s[1], Compensation: s[2], Timeout: 30 * time.Second})
	}
	return d
}

// observedBus returns a started bus on a connection to broker, observed
// with a tracer provider of its own whose spans go to sr.
func observedBus(t *testing.T, broker *membus.Driver, sr *tracetest.SpanRecorder, setup func(*eventbus.Bus, *sdktrace.TracerProvider)) *eventbus.Bus {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, broker.Connect(), &eventbus.Options{Observer: obs})
	setup(bus, tp)
	if err := bus.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, bus) })
	return bus
}

func newSagaServices(t *testing.T) *sagaServices {
	t.Helper()
	s := &sagaServices{sr: tracetest.NewSpanRecorder(), broker: membus.New(nil)}
	t.Cleanup(func() { _ = s.broker.Close(context.Background()) })
	st, err := sqlstore.OpenSQLite(context.Background(), t.TempDir()+"/saga.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s.store = st
	for _, step := range sagaSteps {
		observedBus(t, s.broker, s.sr, func(bus *eventbus.Bus, _ *sdktrace.TracerProvider) {
			p, err := saga.NewParticipant(bus, step[0], st, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, cmd := range step[1:] {
				err := p.Handle(cmd, func(ctx context.Context, req *saga.Request) (any, error) {
					if cmd == "shipping.ship" && req.SagaID == s.shipFails {
						return nil, saga.Fail(errors.New("no courier"))
					}
					return map[string]string{"done": cmd}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	observedBus(t, s.broker, s.sr, func(bus *eventbus.Bus, tp *sdktrace.TracerProvider) {
		s.tp = tp
		s.orc = s.orchestrator(t, bus, tp)
	})
	runOrchestrator(t, s.orc)
	return s
}

func (s *sagaServices) orchestrator(t *testing.T, bus *eventbus.Bus, tp *sdktrace.TracerProvider) *saga.Orchestrator {
	t.Helper()
	orc, err := saga.NewOrchestrator(bus, s.store, &saga.Options{TracerProvider: tp, PollInterval: 20 * time.Millisecond, Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := orc.Register(sagaDefinition()); err != nil {
		t.Fatal(err)
	}
	return orc
}

// runOrchestrator keeps orc.Run running until the test ends.
func runOrchestrator(t *testing.T, orc *saga.Orchestrator) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- orc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitSaga waits until saga id has ended and returns it.
func waitSaga(t *testing.T, orc *saga.Orchestrator, id string) *saga.Instance {
	t.Helper()
	var in *saga.Instance
	waitFor(t, "saga "+id+" to end", func() bool {
		var err error
		in, err = orc.Get(context.Background(), id)
		return err == nil && !in.State.Active()
	})
	return in
}

// sagaTrace is the ended spans of one trace, by span id.
type sagaTrace struct {
	t     *testing.T
	root  sdktrace.ReadOnlySpan
	spans map[trace.SpanID]sdktrace.ReadOnlySpan
}

// traceOf returns the trace whose "saga order" span is saga id's, once it
// holds want spans named want's keys (with those counts).
func (s *sagaServices) traceOf(t *testing.T, id string, want map[string]int) *sagaTrace {
	t.Helper()
	tr := &sagaTrace{t: t}
	defer func() {
		if t.Failed() {
			for _, sp := range tr.spans {
				t.Logf("span %q %s parent %s status %v", sp.Name(), sp.SpanContext().SpanID(), sp.Parent().SpanID(), sp.Status())
			}
		}
	}()
	waitFor(t, "the spans of saga "+id, func() bool {
		tr.root, tr.spans = nil, map[trace.SpanID]sdktrace.ReadOnlySpan{}
		ended := s.sr.Ended()
		for _, sp := range ended {
			if sp.Name() == "saga order" && attr(sp, saga.AttrSagaID) == id {
				tr.root = sp
			}
		}
		if tr.root == nil {
			return false
		}
		names := map[string]int{}
		for _, sp := range ended {
			if sp.SpanContext().TraceID() == tr.root.SpanContext().TraceID() {
				tr.spans[sp.SpanContext().SpanID()] = sp
				names[sp.Name()]++
			}
		}
		for name, n := range want {
			if names[name] < n {
				return false
			}
		}
		return true
	})
	return tr
}

// named returns the spans of the trace with that name.
func (tr *sagaTrace) named(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range tr.spans {
		if sp.Name() == name {
			out = append(out, sp)
		}
	}
	return out
}

// children returns the spans whose parent is sp, with that name.
func (tr *sagaTrace) children(sp sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, c := range tr.spans {
		if c.Parent().SpanID() == sp.SpanContext().SpanID() && c.Name() == name {
			out = append(out, c)
		}
	}
	return out
}

// one returns the single child of sp with that name and kind.
func (tr *sagaTrace) one(sp sdktrace.ReadOnlySpan, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	tr.t.Helper()
	cs := tr.children(sp, name)
	if len(cs) != 1 {
		tr.t.Fatalf("%s has %d children %q, want 1", sp.Name(), len(cs), name)
	}
	if cs[0].SpanKind() != kind {
		tr.t.Errorf("%s: kind %v, want %v", name, cs[0].SpanKind(), kind)
	}
	return cs[0]
}

// step checks that the step span (under the saga span) sends cmd, which
// the participant handles under that send, and that its reply's handling
// by the orchestrator nests under the participant's handling.
func (tr *sagaTrace) step(span, service, cmd string) {
	tr.t.Helper()
	steps := tr.named(span)
	if len(steps) != 1 {
		tr.t.Fatalf("%d spans %q, want 1", len(steps), span)
	}
	st := steps[0]
	if st.Parent().SpanID() != tr.root.SpanContext().SpanID() {
		tr.t.Errorf("%s: parent %s, want the saga span %s", span, st.Parent().SpanID(), tr.root.SpanContext().SpanID())
	}
	dest := "commands." + service + "." + cmd
	send := tr.one(st, "send "+dest, trace.SpanKindProducer)
	process := tr.one(send, "process "+dest, trace.SpanKindConsumer)
	if attr(process, "messaging.consumer.group.name") != service {
		tr.t.Errorf("%s handled by group %q, want %s", dest, attr(process, "messaging.consumer.group.name"), service)
	}
	reply := tr.one(process, "send commands.saga."+saga.ReplyType, trace.SpanKindProducer)
	tr.one(reply, "process commands.saga."+saga.ReplyType, trace.SpanKindConsumer)
}

// connected checks that every span of the trace descends from the saga
// span, whose parent is parent.
func (tr *sagaTrace) connected(parent trace.SpanID) {
	tr.t.Helper()
	if tr.root.Parent().SpanID() != parent {
		tr.t.Errorf("saga span's parent %s, want %s", tr.root.Parent().SpanID(), parent)
	}
	for _, sp := range tr.spans {
		if sp.SpanContext().SpanID() == parent {
			continue
		}
		for cur := sp; cur != tr.root; {
			next, ok := tr.spans[cur.Parent().SpanID()]
			if !ok {
				tr.t.Errorf("span %q is not under the saga span", sp.Name())
				break
			}
			cur = next
		}
	}
}

// A saga across three participant services is one trace: the saga span,
// a span per step and compensation under it, the command sent under the
// step, the participant's handling under the send, and the reply's
// handling under the participant's — on the way forward and when
// compensating.
func TestSagaOneTrace(t *testing.T) {
	s := newSagaServices(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	caller, callerSpan := s.tp.Tracer("test").Start(ctx, "checkout")
	id, err := s.orc.Start(caller, "order", map[string]int{"amount": 3}, saga.WithID("s-ok"))
	if err != nil {
		t.Fatal(err)
	}
	callerSpan.End()
	if in := waitSaga(t, s.orc, id); in.State != saga.Completed {
		t.Fatalf("saga %s %s, want completed", id, in.State)
	}
	tr := s.traceOf(t, id, map[string]int{"process commands.saga." + saga.ReplyType: 3, "send events." + saga.EventCompleted: 1})
	tr.connected(callerSpan.SpanContext().SpanID())
	if tr.root.SpanContext().TraceID() != callerSpan.SpanContext().TraceID() {
		t.Errorf("the saga is not in its caller's trace")
	}
	for _, st := range sagaSteps {
		tr.step("step "+st[0], st[0], st[1])
	}
	if in, _ := s.orc.Get(ctx, id); in.TraceParent == "" || !strings.Contains(in.TraceParent, tr.root.SpanContext().SpanID().String()) {
		t.Errorf("instance trace parent %q, want the saga span %s", in.TraceParent, tr.root.SpanContext().SpanID())
	}

	s.shipFails = "s-undo"
	id, err = s.orc.Start(ctx, "order", map[string]int{"amount": 4}, saga.WithID("s-undo"))
	if err != nil {
		t.Fatal(err)
	}
	if in := waitSaga(t, s.orc, id); in.State != saga.Compensated {
		t.Fatalf("saga %s %s, want compensated", id, in.State)
	}
	tr = s.traceOf(t, id, map[string]int{"process commands.saga." + saga.ReplyType: 5, "send events." + saga.EventCompensated: 1})
	tr.connected(trace.SpanID{})
	for _, st := range sagaSteps {
		tr.step("step "+st[0], st[0], st[1])
	}
	for _, st := range sagaSteps[:2] {
		tr.step("compensate "+st[0], st[0], st[2])
	}
	if n := len(tr.named("compensate shipping")); n != 0 {
		t.Errorf("%d compensations of the failed step, want none", n)
	}
	// The compensation is caused by the failed reply's handling: linked.
	undo := tr.named("compensate payment")[0]
	shipReply := tr.one(tr.one(tr.one(tr.named("step shipping")[0], "send commands.shipping.shipping.ship", trace.SpanKindProducer),
		"process commands.shipping.shipping.ship", trace.SpanKindConsumer), "send commands.saga."+saga.ReplyType, trace.SpanKindProducer)
	cause := tr.one(shipReply, "process commands.saga."+saga.ReplyType, trace.SpanKindConsumer)
	if links := undo.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != cause.SpanContext().SpanID() {
		t.Errorf("compensate payment links %v, want the handling of shipping's reply %s", links, cause.SpanContext().SpanID())
	}
}

// A saga resumed by another orchestrator instance after its first one
// failed to send continues the trace persisted with it.
func TestSagaTraceAfterTakeover(t *testing.T) {
	s := newSagaServices(t)
	// The first instance's bus is closed before it starts the saga: its
	// command cannot go out, and the running instance takes the saga over.
	var first *saga.Orchestrator
	dead := observedBus(t, s.broker, s.sr, func(bus *eventbus.Bus, tp *sdktrace.TracerProvider) {
		first = s.orchestrator(t, bus, tp)
	})
	closeBus(t, dead)
	id, err := first.Start(context.Background(), "order", map[string]int{"amount": 5}, saga.WithID("s-takeover"))
	if err != nil {
		t.Fatal(err)
	}
	in := waitSaga(t, s.orc, id)
	if in.State != saga.Completed {
		t.Fatalf("saga %s %s, want completed", id, in.State)
	}
	if !slices.ContainsFunc(in.History, func(e saga.Event) bool { return e.Kind == "takeover" }) {
		t.Fatalf("saga %s was not taken over: %+v", id, in.History)
	}
	tr := s.traceOf(t, id, map[string]int{"process commands.saga." + saga.ReplyType: 3, "send events." + saga.EventCompleted: 1})
	tr.connected(trace.SpanID{})
	for _, st := range sagaSteps {
		tr.step("step "+st[0], st[0], st[1])
	}
}
