package telemetry_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
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
