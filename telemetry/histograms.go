package telemetry

import (
	"context"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Histograms aggregates the duration and latency histograms of Observers
// (MetricPublishDuration, MetricProcessDuration, MetricLatency) in the
// process, at the cost of a few atomic additions per measurement, and hands
// them to the metric readers it is a producer of. Recorded into an
// OpenTelemetry SDK histogram instead, each measurement costs a few hundred
// nanoseconds (the SDK normalizes and looks up the label set on every
// recording): most of what metrics cost per message.
//
// Give it to the reader and to the Observer:
//
//	h := telemetry.NewHistograms()
//	reader := sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithProducer(h))
//	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
//	obs, err := telemetry.New(&telemetry.Options{MeterProvider: mp, Histograms: h})
//
// NewPrometheus makes both. The histograms have the
// same names, units, descriptions, bucket boundaries and labels as the
// SDK's would, and are cumulative (whatever temporality the reader
// prefers). Like the SDK's by default, each bucket keeps the last
// measurement made in a sampled span as its exemplar
// (OTEL_METRICS_EXEMPLAR_FILTER=always_off: none; other filters are the
// SDK's only). Several Observers may share one Histograms.
type Histograms struct {
	exemplars bool // of sampled spans

	mu     sync.Mutex
	series [numHists]map[attribute.Distinct]*hist // guarded by mu
}

// NewHistograms returns empty histograms.
func NewHistograms() *Histograms {
	h := &Histograms{exemplars: os.Getenv("OTEL_METRICS_EXEMPLAR_FILTER") != "always_off"}
	for i := range h.series {
		h.series[i] = map[attribute.Distinct]*hist{}
	}
	return h
}

var _ sdkmetric.Producer = (*Histograms)(nil)

// The histograms aggregated in process.
const (
	histPublish = iota // MetricPublishDuration
	histProcess        // MetricProcessDuration
	histLatency        // MetricLatency
	numHists
)

// histDefs name and describe the histograms, as newInstruments does.
var histDefs = [numHists]struct{ name, desc string }{
	{MetricPublishDuration, publishDurationDesc},
	{MetricProcessDuration, processDurationDesc},
	{MetricLatency, latencyDesc},
}

// durationBounds are durationBuckets in nanoseconds.
var durationBounds = func() [len(durationBuckets)]int64 {
	var b [len(durationBuckets)]int64
	for i, s := range durationBuckets {
		b[i] = int64(math.Round(s * 1e9))
	}
	return b
}()

// hist is one label set's histogram: counts per bucket (values v with
// bounds[i-1] < v ≤ bounds[i], as the SDK's explicit-bucket histogram),
// and the sum, minimum and maximum in nanoseconds.
type hist struct {
	attrs     attribute.Set
	start     time.Time
	exemplars bool
	counts    [len(durationBuckets) + 1]atomic.Uint64
	sum       atomic.Int64
	min, max  atomic.Int64 // valid once a count is
	last      atomic.Pointer[exemplars]
}

// exemplars are a histogram's, by bucket, made at its first measurement in
// a sampled span.
type exemplars [len(durationBuckets) + 1]exemplar

// exemplar is the last measurement made in a sampled span.
type exemplar struct {
	mu  sync.Mutex
	t   time.Time // zero: none
	v   time.Duration
	tid trace.TraceID
	sid trace.SpanID
}

// hist returns the histogram of instrument i for the label set s.
func (h *Histograms) hist(i int, s attribute.Set) *hist {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := s.Equivalent()
	if x, ok := h.series[i][k]; ok {
		return x
	}
	x := &hist{attrs: s, start: time.Now(), exemplars: h.exemplars}
	x.min.Store(1<<63 - 1)
	x.max.Store(-1 << 63)
	h.series[i][k] = x
	return x
}

// record adds a measurement of d, made in span (nil: none).
func (x *hist) record(d time.Duration, span trace.Span) {
	v := int64(d)
	i := 0
	for i < len(durationBounds) && durationBounds[i] < v {
		i++
	}
	x.sum.Add(v)
	for m := x.min.Load(); v < m && !x.min.CompareAndSwap(m, v); m = x.min.Load() {
	}
	for m := x.max.Load(); v > m && !x.max.CompareAndSwap(m, v); m = x.max.Load() {
	}
	x.counts[i].Add(1) // last: a count read means a minimum and maximum
	if span != nil && x.exemplars {
		if sc := span.SpanContext(); sc.IsSampled() {
			es := x.last.Load()
			if es == nil {
				x.last.CompareAndSwap(nil, new(exemplars))
				es = x.last.Load()
			}
			e := &es[i]
			e.mu.Lock()
			e.t, e.v, e.tid, e.sid = time.Now(), d, sc.TraceID(), sc.SpanID()
			e.mu.Unlock()
		}
	}
}

// Produce implements sdkmetric.Producer: the histograms measured so far,
// those of label sets without a measurement left out.
func (h *Histograms) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	bounds := slices.Clone(durationBuckets[:])
	sm := metricdata.ScopeMetrics{Scope: instrumentation.Scope{Name: ScopeName, SchemaURL: semconv.SchemaURL}}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, series := range h.series {
		var dps []metricdata.HistogramDataPoint[float64]
		for _, x := range series {
			dp := metricdata.HistogramDataPoint[float64]{
				Attributes: x.attrs, StartTime: x.start, Time: now, Bounds: bounds,
				BucketCounts: make([]uint64, len(x.counts)),
			}
			for b := range x.counts {
				dp.BucketCounts[b] = x.counts[b].Load()
				dp.Count += dp.BucketCounts[b]
				if es := x.last.Load(); es != nil {
					e := &es[b]
					e.mu.Lock()
					if !e.t.IsZero() {
						tid, sid := e.tid, e.sid
						dp.Exemplars = append(dp.Exemplars, metricdata.Exemplar[float64]{
							Time: e.t, Value: e.v.Seconds(), TraceID: tid[:], SpanID: sid[:],
						})
					}
					e.mu.Unlock()
				}
			}
			if dp.Count == 0 {
				continue
			}
			dp.Sum = time.Duration(x.sum.Load()).Seconds()
			dp.Min = metricdata.NewExtrema(time.Duration(x.min.Load()).Seconds())
			dp.Max = metricdata.NewExtrema(time.Duration(x.max.Load()).Seconds())
			dps = append(dps, dp)
		}
		if len(dps) > 0 {
			sm.Metrics = append(sm.Metrics, metricdata.Metrics{
				Name: histDefs[i].name, Description: histDefs[i].desc, Unit: "s",
				Data: metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: dps},
			})
		}
	}
	if len(sm.Metrics) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{sm}, nil
}
