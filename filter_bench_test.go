package eventbus_test

import (
	"testing"

	"github.com/marty-msf/eventbus"
)

// BenchmarkFilterMatch measures a compiled filter's Match per message: an
// attribute filter, and the CESQL expression of bench/'s filter scenario.
func BenchmarkFilterMatch(b *testing.B) {
	m := &eventbus.Message{
		ID: "id-1", Source: "bench", Type: "bench.event", Subject: "orders/eu",
		Data: []byte(`{"amount":250,"currency":"EUR","customer":{"id":"c-1","tier":"gold"}}`),
	}
	for _, c := range []struct {
		name string
		f    eventbus.Filter
	}{
		{"attributes", eventbus.All(eventbus.Exact("source", "bench"), eventbus.Prefix("subject", "orders/"))},
		{"cesql", eventbus.SQL("source = 'bench' AND INT(DATA('amount')) > 100")},
	} {
		mt, err := eventbus.CompileFilter(c.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !mt.Match(m) {
					b.Fatal("no match")
				}
			}
		})
	}
}
