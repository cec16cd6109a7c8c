package telemetry

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/marty-msf/eventbus"
)

// The saga lifecycle event types (package saga's Event* constants) that
// the saga metrics read.
const (
	sagaStarted     = "saga.started"
	sagaCompleted   = "saga.completed"
	sagaCompensated = "saga.compensated"
	sagaFailed      = "saga.failed"
)

// sagaEvent is the part of saga.LifecycleEvent the metrics use.
type sagaEvent struct {
	SagaID  string    `json:"saga_id"`
	Saga    string    `json:"saga"`
	Started time.Time `json:"started"`
}

// maxSagaStarts bounds the start times kept for the duration metric.
const maxSagaStarts = 100_000

// sagaStarts remembers when the sagas this process started began, until
// they end.
type sagaStarts struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// sagaEvents counts the saga lifecycle events among msgs, published by an
// orchestrator on this bus, and records the durations of the sagas that
// ended.
func (o *Observer) sagaEvents(ctx context.Context, msgs []*eventbus.Message) {
	for _, m := range msgs {
		switch m.Type {
		case sagaStarted, sagaCompleted, sagaCompensated, sagaFailed,
			"saga.step.completed", "saga.step.failed", "saga.step.compensated", "saga.compensating":
		default:
			continue
		}
		var ev sagaEvent
		if json.Unmarshal(m.Data, &ev) != nil || ev.SagaID == "" {
			continue
		}
		attrs := metric.WithAttributes(attribute.String("saga.name", ev.Saga), attribute.String("saga.event", m.Type))
		o.m.sagaTransitions.Add(ctx, 1, attrs)
		start, ok := o.sagas.observe(m.Type, ev.SagaID, m.Time)
		if ended(m.Type) && !ev.Started.IsZero() {
			// The event carries the saga's start: its duration is known
			// whichever process started it.
			start, ok = ev.Started, true
		}
		if ok {
			o.m.sagaDuration.Record(ctx, m.Time.Sub(start).Seconds(),
				metric.WithAttributes(attribute.String("saga.name", ev.Saga), attribute.String("saga.event", m.Type)))
		}
	}
}

func ended(typ string) bool {
	return typ == sagaCompleted || typ == sagaCompensated || typ == sagaFailed
}

// observe records a saga's start, or returns it when the saga ended. It
// serves events of sagas started before the Started field existed.
func (s *sagaStarts) observe(typ, id string, at time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch typ {
	case sagaStarted:
		if s.m == nil {
			s.m = map[string]time.Time{}
		}
		if len(s.m) < maxSagaStarts {
			s.m[id] = at
		}
	case sagaCompleted, sagaCompensated, sagaFailed:
		start, ok := s.m[id]
		delete(s.m, id)
		return start, ok
	}
	return time.Time{}, false
}
