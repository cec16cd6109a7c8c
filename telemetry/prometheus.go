package telemetry

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// NewPrometheus returns a MeterProvider whose metrics a new Prometheus
// registry holds, and the http.Handler that serves that registry in the
// Prometheus exposition format (mount it at /metrics). Shut the provider
// down when done with it. An Observer given this MeterProvider aggregates
// its histograms in a Histograms that the exporter reads.
func NewPrometheus() (*sdkmetric.MeterProvider, http.Handler, error) {
	reg := prometheus.NewRegistry()
	h := NewHistograms()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithProducer(h))
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	rememberHistograms(mp, h)
	return mp, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
