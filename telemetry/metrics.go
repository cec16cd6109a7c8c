package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/marty-msf/eventbus"
)

// The metrics, with their OpenTelemetry names (Prometheus turns the dots
// into underscores and adds the unit and _total suffixes). Their labels are
// bounded: messaging.system, messaging.operation.name,
// messaging.destination.name, messaging.consumer.group.name,
// eventbus.backend, cloudevents.event_type, and error.type on durations
// and sent messages that failed.
const (
	MetricSent            = "messaging.client.sent.messages"      // messages published (confirmed or failed)
	MetricPublishDuration = "messaging.client.operation.duration" // publish and query durations, seconds
	MetricConsumed        = "messaging.client.consumed.messages"  // messages handed to a handler, each attempt
	MetricProcessDuration = "messaging.process.duration"          // handler durations, seconds
	MetricFailed          = "eventbus.messages.failed"            // handler failures, each attempt
	MetricRetried         = "eventbus.messages.retried"           // failed messages to be delivered again
	MetricDeadLettered    = "eventbus.messages.dead_lettered"     // messages sent to a dead-letter destination
	MetricDropped         = "eventbus.messages.dropped"           // messages terminated unhandled
	MetricLatency         = "eventbus.messages.latency"           // from the message's time to its handler's start, seconds
	MetricInFlight        = "eventbus.handlers.in_flight"         // handlers running
	MetricLag             = "eventbus.consumer.lag"               // messages waiting on the broker for a subscription (Watch)
	MetricSagaTransitions = "eventbus.saga.transitions"           // saga lifecycle events by saga and state
	MetricSagaDuration    = "eventbus.saga.duration"              // from a saga's start to its end state, seconds
)

type instruments struct {
	sent, consumed, failed, retried, deadLettered, dropped metric.Int64Counter
	publishDuration, processDuration, latency              metric.Float64Histogram
	inFlight                                               metric.Int64UpDownCounter
	sagaTransitions                                        metric.Int64Counter
	sagaDuration                                           metric.Float64Histogram
}

// durationBuckets suit messaging: from 50µs to a minute.
var durationBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func newInstruments(mt metric.Meter) (*instruments, error) {
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := mt.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := mt.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	m := &instruments{
		sent:            counter(MetricSent, "Messages published (confirmed, or failed with error.type)."),
		consumed:        counter(MetricConsumed, "Messages handed to a handler, each attempt."),
		failed:          counter(MetricFailed, "Handler failures, each attempt."),
		retried:         counter(MetricRetried, "Failed messages to be delivered again."),
		deadLettered:    counter(MetricDeadLettered, "Messages published to their dead-letter destination."),
		dropped:         counter(MetricDropped, "Messages terminated without being handled or dead-lettered."),
		publishDuration: histogram(MetricPublishDuration, "Duration of a publish until confirmed, or of a query until its reply.", durationBuckets),
		processDuration: histogram(MetricProcessDuration, "Duration of a handler.", durationBuckets),
		latency:         histogram(MetricLatency, "Time from a message's time attribute to the start of its handler.", durationBuckets),
	}
	var err error
	m.inFlight, err = mt.Int64UpDownCounter(MetricInFlight, metric.WithDescription("Handlers running."), metric.WithUnit("{handler}"))
	errs = append(errs, err)
	m.sagaTransitions, err = mt.Int64Counter(MetricSagaTransitions, metric.WithDescription("Saga lifecycle events published, by saga name and state."), metric.WithUnit("{transition}"))
	errs = append(errs, err)
	m.sagaDuration = histogram(MetricSagaDuration, "Time from a saga's start to its end state (seen by this process).", []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: metrics: %w", err)
	}
	return m, nil
}

// attrKey identifies a label set: an operation and a message type.
type attrKey struct {
	op  eventbus.Operation
	typ string
}

// labels are the measurement options of one label set, built once.
type labels struct {
	ok     metric.MeasurementOption // without error.type
	errMu  sync.Mutex               // guards errSet
	errSet map[string]metric.MeasurementOption
	base   []attribute.KeyValue
}

// set returns the options for an outcome: err adds its error.type.
func (l *labels) set(err error) metric.MeasurementOption {
	if err == nil {
		return l.ok
	}
	t := errorType(err)
	l.errMu.Lock()
	defer l.errMu.Unlock()
	o, ok := l.errSet[t]
	if !ok {
		o = metric.WithAttributeSet(attribute.NewSet(append(l.base[:len(l.base):len(l.base)], semconv.ErrorTypeKey.String(t))...))
		l.errSet[t] = o
	}
	return o
}

// labels returns the label set of op and typ, from a cache.
func (o *Observer) labels(op eventbus.Operation, typ string) *labels {
	k := attrKey{op, typ}
	o.mu.RLock()
	l, ok := o.attrs[k]
	o.mu.RUnlock()
	if ok {
		return l
	}
	base := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(system(op)),
		semconv.MessagingOperationName(op.Kind.String()),
		semconv.MessagingDestinationName(op.Destination),
		attribute.String("eventbus.backend", op.Backend),
	}
	if op.Group != "" {
		base = append(base, semconv.MessagingConsumerGroupName(op.Group))
	}
	if typ != "" {
		base = append(base, semconv.CloudEventsEventType(typ))
	}
	l = &labels{ok: metric.WithAttributeSet(attribute.NewSet(base...)), errSet: map[string]metric.MeasurementOption{}, base: base}
	o.mu.Lock()
	if prev, ok := o.attrs[k]; ok {
		l = prev
	} else if len(o.attrs) < maxLabelSets {
		o.attrs[k] = l
	}
	o.mu.Unlock()
	return l
}

// maxLabelSets bounds the cache of label sets; beyond it they are built per
// call.
const maxLabelSets = 4096

// errorType is the bounded error.type of err: the bus's error classes, else
// "_OTHER".
func errorType(err error) string {
	var remote *eventbus.RemoteError
	var panicked *eventbus.PanicError
	switch {
	case errors.As(err, &remote):
		return "remote"
	case errors.As(err, &panicked):
		return "panic"
	case errors.Is(err, eventbus.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, eventbus.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, eventbus.ErrTooLarge):
		return "too_large"
	case errors.Is(err, eventbus.ErrClosed):
		return "closed"
	case eventbus.IsPermanent(err):
		return "permanent"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "_OTHER"
}

// Watch adds the metrics read from bus at each collection: the consumer lag
// of every subscription whose backend reports it (eventbus.consumer.lag,
// JetStream today). The returned function unregisters them. Without a
// MeterProvider Watch does nothing.
func (o *Observer) Watch(bus *eventbus.Bus) (stop func() error, err error) {
	if o.m == nil {
		return func() error { return nil }, nil
	}
	lag, err := o.meter.Int64ObservableGauge(MetricLag, metric.WithDescription("Messages waiting on the broker for a subscription's group."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: watch: %w", err)
	}
	reg, err := o.meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, lagTimeout)
		defer cancel()
		for _, l := range bus.Lag(ctx) {
			obs.ObserveInt64(lag, int64(l.Pending), o.labels(l.Operation, "").ok)
		}
		return nil
	}, lag)
	if err != nil {
		return nil, fmt.Errorf("telemetry: watch: %w", err)
	}
	return reg.Unregister, nil
}

// lagTimeout bounds the lag queries of one collection.
const lagTimeout = 2 * time.Second
