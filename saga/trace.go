package saga

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
)

// TracerScope is the instrumentation scope of the saga spans.
const TracerScope = "github.com/marty-msf/eventbus/saga"

// Attributes of the saga spans.
const (
	AttrSagaName    = attribute.Key("eventbus.saga.name")
	AttrSagaID      = attribute.Key("eventbus.saga.id")
	AttrSagaStep    = attribute.Key("eventbus.saga.step")
	AttrSagaAttempt = attribute.Key("eventbus.saga.attempt")
)

// w3c writes and reads the trace context persisted with an instance: W3C
// Trace Context, the format messages carry.
var w3c propagation.TraceContext

// traceFields is a W3C trace context held in two strings (of an instance
// or a message), as a propagation carrier.
type traceFields struct{ parent, state *string }

func instanceTrace(in *Instance) traceFields { return traceFields{&in.TraceParent, &in.TraceState} }

func (c traceFields) Get(key string) string {
	switch key {
	case "traceparent":
		return *c.parent
	case "tracestate":
		return *c.state
	}
	return ""
}

func (c traceFields) Set(key, value string) {
	switch key {
	case "traceparent":
		*c.parent = value
	case "tracestate":
		*c.state = value
	}
}

func (c traceFields) Keys() []string { return []string{"traceparent", "tracestate"} }

// startTrace begins the trace of a new saga: with a tracer, a span "saga
// <name>" under ctx's span (the returned function ends it with Start's
// outcome); the trace
// context persisted with the instance is that span's, or else ctx's own
// span's, if any.
func (o *Orchestrator) startTrace(ctx context.Context, in *Instance) (context.Context, func(error)) {
	end := func(error) {}
	if o.tracer != nil {
		var span trace.Span
		ctx, span = o.tracer.Start(ctx, "saga "+in.Name, trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(AttrSagaName.String(in.Name), AttrSagaID.String(in.ID)))
		end = func(err error) { endSpan(span, err) }
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		w3c.Inject(ctx, instanceTrace(in))
	}
	return ctx, end
}

// sagaContext returns ctx with the span of in's persisted trace context as
// its span, so that what a transition sends is part of the saga's trace,
// whichever process or goroutine runs it.
func sagaContext(ctx context.Context, in *Instance) context.Context {
	if in.TraceParent == "" {
		return ctx
	}
	sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), instanceTrace(in)))
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// stepSpan starts the span of a step's command ("step <name>") or
// compensation ("compensate <name>") under the saga's span, linked to the
// span of ctx (what caused the transition: a reply's handling, a Start,
// Cancel or Retry call) when that is another one. Without a tracer it
// returns sctx and a nil span.
func (o *Orchestrator) stepSpan(ctx, sctx context.Context, in *Instance, step string, out Outgoing) (context.Context, trace.Span) {
	if o.tracer == nil {
		return sctx, nil
	}
	name := "step " + step
	if out.Kind == actionUndo {
		name = "compensate " + step
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrSagaName.String(in.Name), AttrSagaID.String(in.ID), AttrSagaStep.String(step), AttrSagaAttempt.Int(out.Attempt)),
	}
	if cause := trace.SpanContextFromContext(ctx); cause.IsValid() && cause.SpanID() != trace.SpanContextFromContext(sctx).SpanID() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: cause}))
	}
	return o.tracer.Start(sctx, name, opts...)
}

// endSpan ends a saga or step span with the outcome of what it covers.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// carryTrace sets m's trace context to ctx's span's, so that the receiver
// continues the trace even when the bus has no Observer to write it (an
// Observer writes its own producer span's over it).
func carryTrace(ctx context.Context, m *eventbus.Message) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		m.TraceParent, m.TraceState = "", ""
		w3c.Inject(ctx, traceFields{&m.TraceParent, &m.TraceState})
	}
}
