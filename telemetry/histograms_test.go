package telemetry_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/telemetry"
)

// The histograms Histograms produces are those the SDK makes from the same
// measurements: names, units, descriptions, bounds, label sets and counts,
// and exemplars from the sampled spans.
func TestHistogramsAsSDK(t *testing.T) {
	collect := func(local bool) map[string]metricdata.HistogramDataPoint[float64] {
		var opts []sdkmetric.ManualReaderOption
		tp, _ := tracing(t)
		o := telemetry.Options{TracerProvider: tp}
		if local {
			o.Histograms = telemetry.NewHistograms()
			opts = append(opts, sdkmetric.WithProducer(o.Histograms))
		}
		reader := sdkmetric.NewManualReader(opts...)
		o.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer o.MeterProvider.(*sdkmetric.MeterProvider).Shutdown(context.Background())
		obs, err := telemetry.New(&o)
		if err != nil {
			t.Fatal(err)
		}
		bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
		defer closeBus(t, bus)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := bus.SubscribeEvents(ctx, []string{"job"}, "workers", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			if m.ID == "job-1" || m.ID == "job-2" {
				return eventbus.Permanent(errFlaky)
			}
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		if err := bus.Start(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 7 {
			if err := bus.PublishEvent(ctx, &eventbus.Message{ID: "job-" + strconv.Itoa(i), Type: "job", Time: time.Now().Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the workload", func() bool {
			s := bus.Stats()
			return s.Handled == 5 && s.DeadLettered == 2
		})
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		points := map[string]metricdata.HistogramDataPoint[float64]{}
		for _, sm := range rm.ScopeMetrics {
			if sm.Scope.Name != telemetry.ScopeName {
				t.Errorf("scope %q", sm.Scope.Name)
			}
			for _, m := range sm.Metrics {
				h, ok := m.Data.(metricdata.Histogram[float64])
				if !ok {
					continue
				}
				if h.Temporality != metricdata.CumulativeTemporality {
					t.Errorf("%s: temporality %v", m.Name, h.Temporality)
				}
				for _, dp := range h.DataPoints {
					points[m.Name+" "+m.Unit+" "+m.Description+" "+dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp
				}
			}
		}
		return points
	}
	sdk, local := collect(false), collect(true)
	if len(sdk) != 4 { // send; process, ok and permanent; latency
		t.Errorf("%d histogram series from the SDK, want 4: %v", len(sdk), sdk)
	}
	for k, want := range sdk {
		got, ok := local[k]
		switch {
		case !ok:
			t.Errorf("no %s", k)
		case got.Count != want.Count || len(got.BucketCounts) != len(want.BucketCounts) || !slicesEqual(got.Bounds, want.Bounds):
			t.Errorf("%s: count %d, %d buckets, bounds %v; want %d, %d, %v", k, got.Count, len(got.BucketCounts), got.Bounds, want.Count, len(want.BucketCounts), want.Bounds)
		}
		if v, ok := got.Min.Value(); !ok || v > got.Sum || got.Sum <= 0 {
			t.Errorf("%s: min %v, sum %v", k, v, got.Sum)
		}
		if len(want.Exemplars) == 0 || len(got.Exemplars) == 0 {
			t.Errorf("%s: %d exemplars, the SDK %d; want some", k, len(got.Exemplars), len(want.Exemplars))
		}
		for _, e := range got.Exemplars {
			if len(e.TraceID) != 16 || len(e.SpanID) != 8 || e.Time.IsZero() || e.Value > got.Sum {
				t.Errorf("%s: exemplar %+v", k, e)
			}
		}
	}
	for k := range local {
		if _, ok := sdk[k]; !ok {
			t.Errorf("%s not from the SDK", k)
		}
	}
	// The exemplar filter always_off leaves them out, as the SDK does.
	t.Setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
	for k, dp := range collect(true) {
		if len(dp.Exemplars) != 0 {
			t.Errorf("%s: %d exemplars with the filter always_off", k, len(dp.Exemplars))
		}
	}
	// The latency of an hour falls in the last bucket (over 60 s).
	for k, dp := range local {
		if dp.Count > 0 && dp.Sum > 3000 && dp.BucketCounts[len(dp.BucketCounts)-1] != dp.Count {
			t.Errorf("%s: buckets %v", k, dp.BucketCounts)
		}
	}
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
