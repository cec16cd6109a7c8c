package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
	// Histograms, when set, aggregates the duration and latency histograms
	// in the process and hands them to the readers it is a producer of,
	// instead of recording each measurement into MeterProvider (see
	// Histograms; NewPrometheus makes one). nil: the histograms are
	// recorded into MeterProvider's.
	//
	// A Histograms is exported only by the readers it was given to as a
	// producer (sdkmetric.WithProducer): given to none, the histograms
	// are lost. Give it to every Observer on that MeterProvider: an
	// Observer without it records the same histograms into the SDK, and a
	// reader that gets both series of one name fails its collection (the
	// Prometheus handler answers 500). MeterProvider's views and the
	// reader's temporality do not apply to these histograms: they are
	// cumulative, with the bucket bounds this package gives the SDK's
	// instruments.
	Histograms *Histograms
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
	hists  *Histograms // nil: histograms recorded into the SDK

	// ops caches what is built once per operation: span names, options and
	// attributes, metric label sets. Read without a lock; mu serializes
	// additions (copy on write), which stop at maxOps.
	ops       cowMap[eventbus.Operation, *opInfo]
	recent    [2]atomic.Pointer[opInfo] // the last sending and handling operations looked up
	mu        sync.Mutex
	labelSets int     // label sets made, up to maxLabelSets; guarded by mu
	overflow  *labels // where measurements go past maxLabelSets

	sagas sagaStarts
}

var _ eventbus.Observer = (*Observer)(nil)

// New returns an Observer configured by opts (nil: observe nothing).
func New(opts *Options) (*Observer, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	obs := &Observer{prop: o.Propagator, log: o.Logger}
	if o.MeterProvider != nil {
		obs.hists = o.Histograms
	}
	obs.overflow = newLabels("", overflowAttrs, obs.hists, allHistograms)
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
		m, err := newInstruments(obs.meter, obs)
		if err != nil {
			return nil, err
		}
		obs.m = m
	}
	return obs, nil
}

// opInfo is what an operation's spans and metrics need, built once.
type opInfo struct {
	op         eventbus.Operation
	spanName   string                  // "<operation> <destination>"
	startOpts  []trace.SpanStartOption // the span kind, and a new root for a batch
	spanAttrs  []attribute.KeyValue    // the messaging attributes of the operation
	metricBase []attribute.KeyValue    // the metric labels but the message type
	attrBufs   sync.Pool               // of *[]attribute.KeyValue holding spanAttrs (setAttrs)

	types  cowMap[string, *labels] // label sets by message type; additions under Observer.mu
	recent atomic.Pointer[labels]  // the last of types looked up
	// transient: built past maxOps, not cached; its measurements go to the
	// overflow label set.
	transient bool
}

// maxOps bounds the operations cached; past it, an operation's span names
// and attributes are built per call.
const maxOps = 1024

// info returns op's opInfo, from the cache. The last operation looked up
// for sending and for handling is kept aside: most often the next one, it
// is compared (its strings are the same) rather than hashed.
func (o *Observer) info(op eventbus.Operation) *opInfo {
	r := &o.recent[0]
	if op.Kind != eventbus.OpSend && op.Kind != eventbus.OpQuery {
		r = &o.recent[1]
	}
	if i := r.Load(); i != nil && i.op == op {
		return i
	}
	i := o.ops.load(&o.mu, op, func() (*opInfo, bool) {
		i := newOpInfo(op)
		i.transient = len(o.ops.all()) >= maxOps
		return i, !i.transient
	})
	if !i.transient {
		r.Store(i)
	}
	return i
}

func newOpInfo(op eventbus.Operation) *opInfo {
	kind, opType := trace.SpanKindProducer, semconv.MessagingOperationTypeSend
	switch op.Kind {
	case eventbus.OpQuery:
		kind = trace.SpanKindClient
	case eventbus.OpProcess, eventbus.OpProcessBatch:
		kind, opType = trace.SpanKindConsumer, semconv.MessagingOperationTypeProcess
	case eventbus.OpAnswer:
		kind, opType = trace.SpanKindServer, semconv.MessagingOperationTypeProcess
	}
	i := &opInfo{op: op, spanName: op.Kind.String() + " " + op.Destination, startOpts: []trace.SpanStartOption{trace.WithSpanKind(kind)}}
	if op.Kind == eventbus.OpProcessBatch {
		i.startOpts = append(i.startOpts, trace.WithNewRoot())
	}
	sys := semconv.MessagingSystemKey.String(system(op))
	opName := semconv.MessagingOperationName(op.Kind.String())
	dest := semconv.MessagingDestinationName(op.Destination)
	backend := attribute.String("eventbus.backend", op.Backend)
	i.spanAttrs = []attribute.KeyValue{sys, opName, opType, dest, backend}
	i.metricBase = []attribute.KeyValue{sys, opName, dest, backend}
	if op.Group != "" {
		g := semconv.MessagingConsumerGroupName(op.Group)
		i.spanAttrs = append(i.spanAttrs, g)
		i.metricBase = append(i.metricBase, g)
	}
	return i
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
	if len(msgs) == 0 || (o.tracer == nil && o.m == nil) {
		return nothing
	}
	if o.m != nil && strings.HasPrefix(msgs[0].Type, "saga.") {
		o.sagaEvents(ctx, msgs)
	}
	info := o.info(op)
	var span trace.Span
	if o.tracer != nil {
		ctx, span = o.tracer.Start(ctx, info.spanName, info.startOpts...)
		if span.IsRecording() {
			setAttrs(span, info, msgs)
		}
		// The trace context of a batch is the same for all its messages:
		// written once, copied to the others.
		o.prop.Inject(ctx, carrier{msgs[0]})
		for _, m := range msgs[1:] {
			m.TraceParent, m.TraceState = msgs[0].TraceParent, msgs[0].TraceState
		}
	}
	c := getCall(o, info, ctx, span)
	if o.m != nil {
		c.l = o.labelsOf(info, msgs[0].Type)
		c.n = len(msgs)
		c.start = time.Now()
	}
	return c.published
}

// nothing is the outcome function of an unobserved publish.
func nothing(error) {}

// Handle implements eventbus.Observer: a consumer (or, for a query, server)
// span continuing the producer's trace, the message in the handler's
// context, and the handling metrics.
func (o *Observer) Handle(ctx context.Context, op eventbus.Operation, msgs []*eventbus.Message) (context.Context, func(error)) {
	var first *eventbus.Message
	if len(msgs) > 0 && msgs[0] != nil {
		first = msgs[0]
	}
	batch := op.Kind == eventbus.OpProcessBatch
	info := o.info(op)
	var span trace.Span
	if o.tracer != nil {
		parent := ctx
		var producer trace.SpanContext
		if !batch && first != nil && first.TraceParent != "" {
			parent = o.prop.Extract(ctx, carrier{first})
			if sc := trace.SpanContextFromContext(parent); sc.IsRemote() {
				producer = sc
			}
		}
		ctx, span = o.tracer.Start(parent, info.spanName, info.startOpts...)
		if span.IsRecording() {
			setAttrs(span, info, msgs)
			// Links only on recorded spans: the samplers in use (parent
			// based, ratio) decide without them.
			if batch {
				for _, m := range msgs {
					if sc := o.producer(m); sc.IsValid() {
						span.AddLink(trace.Link{SpanContext: sc})
					}
				}
			} else if producer.IsValid() {
				span.AddLink(trace.Link{SpanContext: producer})
			}
		}
	}
	if first != nil && !batch {
		ctx = context.WithValue(ctx, handledKey{}, first)
	}
	c := getCall(o, info, ctx, span)
	c.n, c.first = len(msgs), first
	if o.m != nil {
		c.start = time.Now()
		c.l = o.labelsOf(info, typeOf(first))
		c.l.inFlight.Add(1)
		for _, m := range msgs {
			if m != nil && !m.Time.IsZero() {
				o.m.record(ctx, span, histLatency, c.l.ok, c.start.Sub(m.Time))
			}
		}
	}
	return ctx, c.handled
}

// call is what the outcome of a publish or a handling needs. Calls are
// pooled with their outcome functions (published, handled), bound once,
// so that neither allocates: the bus calls an outcome function once.
type call struct {
	o     *Observer
	info  *opInfo
	ctx   context.Context
	span  trace.Span // nil without tracing
	l     *labels    // nil without metrics
	start time.Time
	n     int
	first *eventbus.Message // the handled message, for the log of a failure

	published, handled func(error)
}

var calls sync.Pool

func getCall(o *Observer, info *opInfo, ctx context.Context, span trace.Span) *call {
	c, _ := calls.Get().(*call)
	if c == nil {
		c = new(call)
		c.published, c.handled = c.publishDone, c.handleDone
	}
	c.o, c.info, c.ctx, c.span = o, info, ctx, span
	return c
}

// put clears c, but for its outcome functions, and pools it.
func (c *call) put() {
	*c = call{published: c.published, handled: c.handled}
	calls.Put(c)
}

func (c *call) publishDone(err error) {
	if c.l != nil {
		s := c.l.set(err)
		c.o.m.record(c.ctx, c.span, histPublish, s, time.Since(c.start))
		if c.info.op.Kind == eventbus.OpSend {
			s.sent.Add(int64(c.n))
		}
	}
	if c.span != nil {
		endSpan(c.span, err)
	}
	c.put()
}

func (c *call) handleDone(err error) {
	o, ctx, op := c.o, c.ctx, &c.info.op
	if l := c.l; l != nil {
		l.inFlight.Add(-1)
		o.m.record(ctx, c.span, histProcess, l.set(err), time.Since(c.start))
		l.ok.consumed.Add(int64(c.n))
		if err != nil {
			l.ok.failed.Add(int64(c.n))
		}
	}
	if err != nil && op.Kind != eventbus.OpAnswer {
		o.log.LogAttrs(ctx, slog.LevelWarn, "eventbus: handler failed", append(logAttrs(ctx, *op, c.first), slog.Int("messages", c.n), slog.String("error", err.Error()))...)
	}
	if c.span != nil {
		endSpan(c.span, err)
	}
	c.put()
}

// Settled implements eventbus.Observer: the retried, dead-lettered and
// dropped counters, and a log of dead letters and drops.
func (o *Observer) Settled(op eventbus.Operation, m *eventbus.Message, s eventbus.Settlement) {
	if o.m != nil {
		l := o.labelsOf(o.info(op), typeOf(m)).ok
		switch s {
		case eventbus.Retried:
			l.retried.Add(1)
		case eventbus.DeadLettered:
			l.deadLettered.Add(1)
		case eventbus.Dropped:
			l.dropped.Add(1)
		}
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
	if err != nil && span.IsRecording() {
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

// setAttrs sets the messaging attributes of a span on msgs: the
// operation's, and the message's when there is one. The SDK copies them, so
// the slice they are gathered in is pooled, per operation, with the
// operation's attributes in place: only the message's are written.
func setAttrs(span trace.Span, info *opInfo, msgs []*eventbus.Message) {
	buf, _ := info.attrBufs.Get().(*[]attribute.KeyValue)
	if buf == nil {
		b := make([]attribute.KeyValue, len(info.spanAttrs), len(info.spanAttrs)+maxMessageAttrs)
		copy(b, info.spanAttrs)
		buf = &b
	}
	attrs := *buf
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
	span.SetAttributes(attrs...)
	clear(attrs[len(*buf):]) // drop the references to the message's strings
	info.attrBufs.Put(buf)
}

// maxMessageAttrs is the number of attributes setAttrs adds at most.
const maxMessageAttrs = 7

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
