package telemetry

import (
	"context"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/marty-msf/eventbus"
)

// The label sets are cached up to maxLabelSets; past it, what is counted
// goes to one overflow set, and the operations past maxOps share it.
func TestLabelSetsBounded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	o, err := New(&Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	op := eventbus.Operation{Kind: eventbus.OpProcess, Destination: "d", Backend: "b"}
	info := o.info(op)
	if o.info(op) != info {
		t.Fatal("operation not cached")
	}
	for i := range maxLabelSets { // over 64 operations: a copy per addition is cheap
		op := op
		op.Group = strconv.Itoa(i / 64)
		if l := o.labelsOf(o.info(op), "t"+strconv.Itoa(i%64)); l == o.overflow {
			t.Fatalf("label set %d is the overflow set", i)
		}
	}
	op.Group = "0"
	info = o.info(op)
	if o.labelsOf(info, "t0") == o.overflow {
		t.Fatal("a cached label set lost")
	}
	over := o.labelsOf(info, "one too many")
	if over != o.overflow {
		t.Fatal("past the bound, not the overflow set")
	}
	over.ok.consumed.Add(2)
	for i := range maxOps {
		o.info(eventbus.Operation{Kind: eventbus.OpSend, Destination: "d" + strconv.Itoa(i)})
	}
	extra := o.info(eventbus.Operation{Kind: eventbus.OpSend, Destination: "extra"})
	if !extra.transient || o.labelsOf(extra, "x") != o.overflow {
		t.Fatal("an operation past maxOps is not transient")
	}
	if n := len(o.ops.all()); n != maxOps {
		t.Fatalf("%d operations cached, want %d", n, maxOps)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != MetricConsumed {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, ok := dp.Attributes.Value("otel.metric.overflow"); ok && v == attribute.BoolValue(true) && dp.Value == 2 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("no overflow data point of 2 consumed messages")
	}
}
