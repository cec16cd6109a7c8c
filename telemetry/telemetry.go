package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
)

// ScopeName is the instrumentation scope of the spans and metrics.
const ScopeName = "github.com/marty-msf/eventbus/telemetry"

// Options configures an Observer. The zero value observes nothing.
type Options struct {
	// TracerProvider makes the spans. nil: no spans, and messages carry no
	// trace context.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the metrics (NewPrometheus gives one that
	// Prometheus scrapes). nil: no metrics.
	MeterProvider metric.MeterProvider
	// Propagator writes and reads the trace context of messages. Default:
	// W3C Trace Context, which the CloudEvents distributed-tracing
	// extension (traceparent, tracestate) carries.
	Propagator propagation.TextMapPropagator
	// Logger receives a log per handler failure (warn), dead letter (warn)
	// and dropped message (error), with the message's id, correlation id
	// and trace id — never its data. nil discards them.
	Logger *slog.Logger
}

// Observer is an eventbus.Observer that traces and measures a bus's
// traffic with OpenTelemetry. Set it as eventbus.Options.Observer; call
// Watch with the bus for the metrics read from it (consumer lag). It is safe
// for concurrent use.
//
// Spans follow the OpenTelemetry messaging conventions (semconv v1.43.0):
//
//	send <destination>       producer  PublishEvent, SendCommand, Broadcast, PublishStream
//	process <destination>    consumer  a message handler; child of the producer span, and linked to it
//	process <destination>    consumer  a batch handler; linked to every message's producer
//	query <destination>      client    Query, until the reply
//	answer <destination>     server    a query handler; child of the query span
//
// A handler's context carries its span, so that the spans it starts and
// the messages it publishes nest under it; those messages also get the
// handled message's correlation id (or its id) and, as causation id, its id,
// unless they carry their own.
type Observer struct {
	tracer trace.Tracer // nil without TracerProvider
	prop   propagation.TextMapPropagator
	log    *slog.Logger
	m      *instruments // nil without MeterProvider
	meter  metric.Meter

	mu    sync.RWMutex
	attrs map[attrKey]*labels

	sagas sagaStarts
}

var _ eventbus.Observer = (*Observer)(nil)

// New returns an Observer configured by opts (nil: observe nothing).
func New(opts *Options) (*Observer, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	obs := &Observer{prop: o.Propagator, log: o.Logger, attrs: map[attrKey]*labels{}}
	if obs.prop == nil {
		obs.prop = propagation.TraceContext{}
	}
	if obs.log == nil {
		obs.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.TracerProvider != nil {
		obs.tracer = o.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	}
	if o.MeterProvider != nil {
		obs.meter = o.MeterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
		m, err := newInstruments(obs.meter)
		if err != nil {
			return nil, err
		}
		obs.m = m
	}
	return obs, nil
}

// handledKey carries the message a handler handles in its context.
type handledKey struct{}

// Handled returns the message whose handler ctx belongs to, if any.
func Handled(ctx context.Context) *eventbus.Message {
	m, _ := ctx.Value(handledKey{}).(*eventbus.Message)
	return m
}

// Publish implements eventbus.Observer: a producer (or, for a query, client)
// span whose context the messages carry, causation and correlation ids from
// the handled message, and the send metrics.
func (o *Observer) Publish(ctx context.Context, op eventbus.Operation, msgs []*eventbus.Message) func(error) {
	if in := Handled(ctx); in != nil {
		for _, m := range msgs {
			if m.CausationID == "" {
				m.CausationID = in.ID
			}
			if m.CorrelationID == "" {
				m.CorrelationID = correlation(in)
			}
		}
	}
	if o.m != nil && len(msgs) > 0 && strings.HasPrefix(msgs[0].Type, "saga.") {
		o.sagaEvents(ctx, msgs)
	}
	var span trace.Span
	if o.tracer != nil {
		kind := trace.SpanKindProducer
		if op.Kind == eventbus.OpQuery {
			kind = trace.SpanKindClient
		}
		ctx, span = o.tracer.Start(ctx, op.Kind.String()+" "+op.Destination,
			trace.WithSpanKind(kind), trace.WithAttributes(spanAttrs(op, msgs)...))
		for _, m := range msgs {
			o.prop.Inject(ctx, carrier{m})
		}
	}
	var start time.Time
	if o.m != nil {
		start = time.Now()
	}
	return func(err error) {
		if o.m != nil {
			l := o.labels(op, msgs[0].Type)
			o.m.publishDuration.Record(ctx, time.Since(start).Seconds(), l.set(err))
			if op.Kind == eventbus.OpSend {
				o.m.sent.Add(ctx, int64(len(msgs)), l.set(err))
			}
		}
		if span != nil {
			endSpan(span, err)
		}
	}
}

// Handle implements eventbus.Observer: a consumer (or, for a query, server)
// span continuing the producer's trace, the message in the handler's
// context, and the handling metrics.
func (o *Observer) Handle(ctx context.Context, op eventbus.Operation, msgs []*eventbus.Message) (context.Context, func(error)) {
	var first *eventbus.Message
	if len(msgs) > 0 && msgs[0] != nil {
		first = msgs[0]
	}
	var span trace.Span
	if o.tracer != nil {
		kind := trace.SpanKindConsumer
		if op.Kind == eventbus.OpAnswer {
			kind = trace.SpanKindServer
		}
		opts := []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(spanAttrs(op, msgs)...)}
		parent := ctx
		if op.Kind == eventbus.OpProcessBatch {
			links := make([]trace.Link, 0, len(msgs))
			for _, m := range msgs {
				if sc := o.producer(m); sc.IsValid() {
					links = append(links, trace.Link{SpanContext: sc})
				}
			}
			opts = append(opts, trace.WithLinks(links...), trace.WithNewRoot())
		} else if sc := o.producer(first); sc.IsValid() {
			parent = trace.ContextWithRemoteSpanContext(ctx, sc)
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
		ctx, span = o.tracer.Start(parent, op.Kind.String()+" "+op.Destination, opts...)
	}
	if first != nil && op.Kind != eventbus.OpProcessBatch {
		ctx = context.WithValue(ctx, handledKey{}, first)
	}
	var start time.Time
	var l *labels
	if o.m != nil {
		start = time.Now()
		l = o.labels(op, typeOf(first))
		o.m.inFlight.Add(ctx, 1, l.ok)
		for _, m := range msgs {
			if m != nil && !m.Time.IsZero() {
				o.m.latency.Record(ctx, start.Sub(m.Time).Seconds(), l.ok)
			}
		}
	}
	return ctx, func(err error) {
		if o.m != nil {
			o.m.inFlight.Add(ctx, -1, l.ok)
			o.m.processDuration.Record(ctx, time.Since(start).Seconds(), l.set(err))
			o.m.consumed.Add(ctx, int64(len(msgs)), l.ok)
			if err != nil {
				o.m.failed.Add(ctx, int64(len(msgs)), l.ok)
			}
		}
		if err != nil && op.Kind != eventbus.OpAnswer {
			o.log.LogAttrs(ctx, slog.LevelWarn, "eventbus: handler failed", append(logAttrs(ctx, op, first), slog.Int("messages", len(msgs)), slog.String("error", err.Error()))...)
		}
		if span != nil {
			endSpan(span, err)
		}
	}
}

// Settled implements eventbus.Observer: the retried, dead-lettered and
// dropped counters, and a log of dead letters and drops.
func (o *Observer) Settled(op eventbus.Operation, m *eventbus.Message, s eventbus.Settlement) {
	if o.m != nil {
		l := o.labels(op, typeOf(m))
		var c metric.Int64Counter
		switch s {
		case eventbus.Retried:
			c = o.m.retried
		case eventbus.DeadLettered:
			c = o.m.deadLettered
		case eventbus.Dropped:
			c = o.m.dropped
		default:
			return
		}
		c.Add(context.Background(), 1, l.ok)
	}
	switch s {
	case eventbus.DeadLettered:
		o.log.LogAttrs(context.Background(), slog.LevelWarn, "eventbus: message dead-lettered", logAttrs(o.messageContext(m), op, m)...)
	case eventbus.Dropped:
		o.log.LogAttrs(context.Background(), slog.LevelError, "eventbus: message dropped", logAttrs(o.messageContext(m), op, m)...)
	}
}

// messageContext is a context with m's trace context, for logs.
func (o *Observer) messageContext(m *eventbus.Message) context.Context {
	if sc := o.producer(m); sc.IsValid() {
		return trace.ContextWithRemoteSpanContext(context.Background(), sc)
	}
	return context.Background()
}

// producer returns the span context m carries.
func (o *Observer) producer(m *eventbus.Message) trace.SpanContext {
	if m == nil || m.TraceParent == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(o.prop.Extract(context.Background(), carrier{m}))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
	}
	span.End()
}

func correlation(m *eventbus.Message) string {
	if m.CorrelationID != "" {
		return m.CorrelationID
	}
	return m.ID
}

func typeOf(m *eventbus.Message) string {
	if m == nil {
		return ""
	}
	return m.Type
}

// spanAttrs are the messaging attributes of a span on msgs.
func spanAttrs(op eventbus.Operation, msgs []*eventbus.Message) []attribute.KeyValue {
	opType := semconv.MessagingOperationTypeSend
	switch op.Kind {
	case eventbus.OpProcess, eventbus.OpProcessBatch, eventbus.OpAnswer:
		opType = semconv.MessagingOperationTypeProcess
	}
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs,
		semconv.MessagingSystemKey.String(system(op)),
		semconv.MessagingOperationName(op.Kind.String()),
		opType,
		semconv.MessagingDestinationName(op.Destination),
		attribute.String("eventbus.backend", op.Backend),
	)
	if op.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(op.Group))
	}
	switch {
	case len(msgs) == 1 && msgs[0] != nil:
		m := msgs[0]
		attrs = append(attrs,
			semconv.MessagingMessageID(m.ID),
			semconv.MessagingMessageBodySize(len(m.Data)),
			semconv.CloudEventsEventID(m.ID),
			semconv.CloudEventsEventSource(m.Source),
			semconv.CloudEventsEventType(m.Type),
		)
		if c := m.CorrelationID; c != "" {
			attrs = append(attrs, semconv.MessagingMessageConversationID(c))
		}
		if m.Subject != "" {
			attrs = append(attrs, semconv.CloudEventsEventSubject(m.Subject))
		}
	case len(msgs) > 1:
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(msgs)))
	}
	return attrs
}

func system(op eventbus.Operation) string {
	if op.System != "" {
		return op.System
	}
	return "eventbus"
}

// logAttrs are the attributes of a log about m: ids and destination, never
// data.
func logAttrs(ctx context.Context, op eventbus.Operation, m *eventbus.Message) []slog.Attr {
	attrs := []slog.Attr{slog.String("destination", op.Destination), slog.String("backend", op.Backend)}
	if m != nil {
		attrs = append(attrs, slog.String("message_id", m.ID), slog.String("type", m.Type))
		if m.CorrelationID != "" {
			attrs = append(attrs, slog.String("correlation_id", m.CorrelationID))
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return attrs
}

// carrier carries the trace context of a message in its traceparent and
// tracestate attributes (the CloudEvents distributed-tracing extension).
type carrier struct{ m *eventbus.Message }

func (c carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.m.TraceParent
	case "tracestate":
		return c.m.TraceState
	}
	return ""
}

func (c carrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.m.TraceParent = value
	case "tracestate":
		c.m.TraceState = value
	}
}

func (c carrier) Keys() []string { return []string{"traceparent", "tracestate"} }
