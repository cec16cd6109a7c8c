package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/marty-msf/eventbus"
)

// The metrics, with their OpenTelemetry names (Prometheus turns the dots
// into underscores and adds the unit and _total suffixes). Their labels are
// bounded: messaging.system, messaging.operation.name,
// messaging.destination.name, messaging.consumer.group.name,
// eventbus.backend, cloudevents.event_type, and error.type on durations
// and sent messages that failed. Past 4096 label sets, further ones are
// counted under the single label otel.metric.overflow=true.
//
// Cost per message: the histograms (durations and latency) take three
// measurements per message sent and handled, aggregated by Histograms
// when the Observer has one, else recorded into the SDK. The counters and the in-flight gauge are atomic integers per label set that
// the SDK reads at each collection (observable instruments), so they cost
// an atomic add each. No counter was dropped for a histogram's count,
// because none has the same count: the counters count messages, the
// duration histograms operations (a stream batch is one publish and one
// batch handler call). For single messages, though, the count of
// messaging.client.operation.duration{messaging.operation.name="send"}
// equals messaging.client.sent.messages, and the count of
// messaging.process.duration equals messaging.client.consumed.messages
// (with error.type: eventbus.messages.failed).
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
	// Recorded per operation, without Histograms.
	publishDuration, processDuration, latency metric.Float64Histogram
	sagaTransitions                           metric.Int64Counter
	sagaDuration                              metric.Float64Histogram
	// Read from the label sets' counts at collection.
	sent, consumed, failed, retried, deadLettered, dropped metric.Int64ObservableCounter
	inFlight                                               metric.Int64ObservableUpDownCounter
}

// The descriptions of the histograms.
const (
	publishDurationDesc = "Duration of a publish until confirmed, or of a query until its reply."
	processDurationDesc = "Duration of a handler."
	latencyDesc         = "Time from a message's time attribute to the start of its handler."
)

// durationBuckets suit messaging: from 50µs to a minute.
var durationBuckets = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func newInstruments(mt metric.Meter, o *Observer) (*instruments, error) {
	var errs []error
	counter := func(name, desc string) metric.Int64ObservableCounter {
		c, err := mt.Int64ObservableCounter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := mt.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	m := &instruments{
		sent:         counter(MetricSent, "Messages published (confirmed, or failed with error.type)."),
		consumed:     counter(MetricConsumed, "Messages handed to a handler, each attempt."),
		failed:       counter(MetricFailed, "Handler failures, each attempt."),
		retried:      counter(MetricRetried, "Failed messages to be delivered again."),
		deadLettered: counter(MetricDeadLettered, "Messages published to their dead-letter destination."),
		dropped:      counter(MetricDropped, "Messages terminated without being handled or dead-lettered."),
	}
	if o.hists == nil {
		m.publishDuration = histogram(MetricPublishDuration, publishDurationDesc, durationBuckets[:])
		m.processDuration = histogram(MetricProcessDuration, processDurationDesc, durationBuckets[:])
		m.latency = histogram(MetricLatency, latencyDesc, durationBuckets[:])
	}
	var err error
	m.inFlight, err = mt.Int64ObservableUpDownCounter(MetricInFlight, metric.WithDescription("Handlers running."), metric.WithUnit("{handler}"))
	errs = append(errs, err)
	m.sagaTransitions, err = mt.Int64Counter(MetricSagaTransitions, metric.WithDescription("Saga lifecycle events published, by saga name and state."), metric.WithUnit("{transition}"))
	errs = append(errs, err)
	m.sagaDuration = histogram(MetricSagaDuration, "Time from a saga's start to its end state (seen by this process).", []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: metrics: %w", err)
	}
	_, err = mt.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		o.collect(obs)
		return nil
	}, m.sent, m.consumed, m.failed, m.retried, m.deadLettered, m.dropped, m.inFlight)
	if err != nil {
		return nil, fmt.Errorf("telemetry: metrics: %w", err)
	}
	return m, nil
}

// series is one label set: its measurement options, built once, the
// counts the observable counters report and, with Histograms, its
// histograms.
type series struct {
	set   attribute.Set
	rec   []metric.RecordOption  // metric.WithAttributeSet(set), as a ready variadic argument
	obs   []metric.ObserveOption // the same
	hists [numHists]*hist        // with Histograms

	sent, consumed, failed, retried, deadLettered, dropped atomic.Int64
}

// newSeries returns the series of the label set kvs, with, given h, the
// histograms it uses (a bit per histPublish, histProcess, histLatency).
func newSeries(kvs []attribute.KeyValue, h *Histograms, uses uint8) *series {
	s := &series{set: attribute.NewSet(kvs...)}
	opt := metric.WithAttributeSet(s.set)
	s.rec = []metric.RecordOption{opt}
	s.obs = []metric.ObserveOption{opt}
	if h != nil {
		for i := range s.hists {
			if uses&(1<<i) != 0 {
				s.hists[i] = h.hist(i, s.set)
			}
		}
	}
	return s
}

// histograms returns the histograms that operations of kind use, for
// newSeries.
func histograms(kind eventbus.OperationKind) uint8 {
	if kind == eventbus.OpSend || kind == eventbus.OpQuery {
		return 1 << histPublish
	}
	return 1<<histProcess | 1<<histLatency
}

// allHistograms are those of the overflow set, which all operations share.
const allHistograms = 1<<numHists - 1

// record adds d to histogram i (histPublish, histProcess, histLatency) of
// s: in s's own histogram with Histograms (span, if sampled, its
// exemplar), else into the SDK's (which finds the span in ctx).
func (m *instruments) record(ctx context.Context, span trace.Span, i int, s *series, d time.Duration) {
	if x := s.hists[i]; x != nil {
		x.record(d, span)
		return
	}
	h := m.publishDuration
	switch i {
	case histProcess:
		h = m.processDuration
	case histLatency:
		h = m.latency
	}
	if h != nil { // nil with Histograms: s does not use histogram i
		h.Record(ctx, d.Seconds(), s.rec...)
	}
}

// labels are the label sets of an operation on a message type: ok without
// error.type, and one per error.type met.
type labels struct {
	typ      string // the message type
	ok       *series
	inFlight atomic.Int64 // handlers running
	base     []attribute.KeyValue
	hists    *Histograms // nil: histograms recorded into the SDK
	uses     uint8       // the histograms used, for newSeries

	errMu sync.Mutex              // serializes additions to errs
	errs  cowMap[string, *series] // by error.type: a handful (errorType)
}

func newLabels(typ string, base []attribute.KeyValue, h *Histograms, uses uint8) *labels {
	return &labels{typ: typ, ok: newSeries(base, h, uses), base: base, hists: h, uses: uses}
}

// set returns the label set for an outcome: err adds its error.type.
func (l *labels) set(err error) *series {
	if err == nil {
		return l.ok
	}
	t := errorType(err)
	return l.errs.load(&l.errMu, t, func() (*series, bool) {
		return newSeries(append(l.base[:len(l.base):len(l.base)], semconv.ErrorTypeKey.String(t)), l.hists, l.uses), true
	})
}

// each calls fn with each of l's label sets.
func (l *labels) each(fn func(*series)) {
	fn(l.ok)
	for _, s := range l.errs.all() {
		fn(s)
	}
}

// labels returns the label set of the operation on messages of type typ,
// from the operation's cache (the last one looked up kept aside); past
// maxLabelSets, the overflow set.
func (o *Observer) labelsOf(info *opInfo, typ string) *labels {
	if info.transient {
		return o.overflow
	}
	if l := info.recent.Load(); l != nil && l.typ == typ {
		return l
	}
	l := info.types.load(&o.mu, typ, func() (*labels, bool) {
		if o.labelSets >= maxLabelSets {
			return o.overflow, false
		}
		o.labelSets++
		base := info.metricBase
		if typ != "" {
			base = append(base[:len(base):len(base)], semconv.CloudEventsEventType(typ))
		}
		return newLabels(typ, base, o.hists, histograms(info.op.Kind)), true
	})
	if l != o.overflow {
		info.recent.Store(l)
	}
	return l
}

// maxLabelSets bounds the label sets (operation and message type; each
// error.type adds one of a handful); beyond it measurements go to the
// overflow set.
const maxLabelSets = 4096

// overflowAttrs label what is measured past maxLabelSets, as the SDK does
// past its cardinality limit.
var overflowAttrs = []attribute.KeyValue{attribute.Bool("otel.metric.overflow", true)}

// collect reports the counts of every label set.
func (o *Observer) collect(obs metric.Observer) {
	m := o.m
	report := func(handles bool, l *labels) {
		l.each(func(s *series) {
			for _, c := range []struct {
				inst metric.Int64ObservableCounter
				n    int64
			}{{m.sent, s.sent.Load()}, {m.consumed, s.consumed.Load()}, {m.failed, s.failed.Load()}, {m.retried, s.retried.Load()}, {m.deadLettered, s.deadLettered.Load()}, {m.dropped, s.dropped.Load()}} {
				if c.n != 0 {
					obs.ObserveInt64(c.inst, c.n, s.obs...)
				}
			}
		})
		if handles {
			obs.ObserveInt64(m.inFlight, l.inFlight.Load(), l.ok.obs...)
		}
	}
	for _, info := range o.ops.all() {
		for _, l := range info.types.all() {
			report(info.op.Kind != eventbus.OpSend && info.op.Kind != eventbus.OpQuery, l)
		}
	}
	report(false, o.overflow)
}

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
// of every subscription whose backend reports it (eventbus.consumer.lag:
// JetStream, Kafka and Redis Streams). The returned function unregisters
// them. Without a MeterProvider Watch does nothing.
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
			obs.ObserveInt64(lag, int64(l.Pending), o.labelsOf(o.info(l.Operation), "").ok.obs...)
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
