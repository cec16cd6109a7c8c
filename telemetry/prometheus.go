package telemetry

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Prometheus is a MeterProvider whose metrics a Prometheus registry of its
// own holds, and the http.Handler that serves that registry.
type Prometheus struct {
	// MeterProvider is for Options.MeterProvider. Shut it down when done
	// with it.
	MeterProvider *sdkmetric.MeterProvider
	// Histograms is for Options.Histograms: the exporter reads it, so that
	// the Observer aggregates its histograms in process. Give it to every
	// Observer on MeterProvider (see Options.Histograms).
	Histograms *Histograms
	// Handler serves the registry in the Prometheus exposition format
	// (mount it at /metrics).
	Handler http.Handler
}

// NewPrometheus returns a Prometheus exporter and its MeterProvider:
//
//	p, err := telemetry.NewPrometheus()
//	obs, err := telemetry.New(&telemetry.Options{MeterProvider: p.MeterProvider, Histograms: p.Histograms})
//	http.Handle("/metrics", p.Handler)
func NewPrometheus() (*Prometheus, error) {
	reg := prometheus.NewRegistry()
	h := NewHistograms()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithProducer(h))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return &Prometheus{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		Histograms:    h,
		Handler:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}
