package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/saga/sqlstore"
	"github.com/marty-msf/eventbus/telemetry"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records returns the JSON records written so far.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// A handler's logs through LogHandler carry the handled message's ids and
// the trace and span ids of its process span; the Observer's own log of a
// dead letter carries the message's ids and trace id; neither carries the
// message's data.
func TestLogFields(t *testing.T) {
	tp, sr := tracing(t)
	var handlerLogs, busLogs syncBuffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&handlerLogs, nil)))
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp, Logger: slog.New(slog.NewJSONHandler(&busLogs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = bus.SubscribeEvents(ctx, []string{"card.saved"}, "vault", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		log.InfoContext(ctx, "saving card")
		return eventbus.Permanent(errFlaky)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	secret := "4111-1111-1111-1111"
	err = bus.PublishEvent(ctx, &eventbus.Message{ID: "card-1", Type: "card.saved", CorrelationID: "signup-9", Data: []byte(`{"pan":"` + secret + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	process := spanNamed(t, sr, "process events.card.saved")
	traceID, spanID := process.SpanContext().TraceID().String(), process.SpanContext().SpanID().String()
	var deadLetter map[string]any
	waitFor(t, "the dead letter's log", func() bool {
		for _, r := range busLogs.records(t) {
			if r["msg"] == "eventbus: message dead-lettered" {
				deadLetter = r
				return true
			}
		}
		return false
	})
	handler := handlerLogs.records(t)
	if len(handler) != 1 {
		t.Fatalf("%d handler records, want 1", len(handler))
	}
	for _, c := range []struct {
		name   string
		record map[string]any
		want   map[string]string
	}{
		{"handler", handler[0], map[string]string{"message_id": "card-1", "correlation_id": "signup-9", "type": "card.saved", "trace_id": traceID, "span_id": spanID}},
		{"dead letter", deadLetter, map[string]string{"message_id": "card-1", "correlation_id": "signup-9", "type": "card.saved", "destination": "events.card.saved", "trace_id": traceID}},
	} {
		for k, v := range c.want {
			if got, _ := c.record[k].(string); got != v {
				t.Errorf("%s record: %s = %q, want %q (%v)", c.name, k, got, v, c.record)
			}
		}
	}
	for _, buf := range []*syncBuffer{&handlerLogs, &busLogs} {
		buf.mu.Lock()
		leaked := strings.Contains(buf.b.String(), secret)
		buf.mu.Unlock()
		if leaked {
			t.Error("a log carries the message's data")
		}
	}
}

// SagaStoreCheck on a SQL store is ready while its database answers and not
// once it is closed; Health reports it beside the backends.
func TestSagaStoreHealth(t *testing.T) {
	store, err := sqlstore.OpenSQLite(context.Background(), t.TempDir()+"/saga.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), nil)
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h := &telemetry.Health{Bus: bus, Checks: []telemetry.Check{telemetry.SagaStoreCheck("saga store", store)}}
	if rep := h.Check(ctx); !rep.Ready || !rep.Live || len(rep.Checks) != 2 || rep.Checks[1].Name != "saga store" {
		t.Errorf("with the store open: %+v", rep)
	}
	store.Close()
	rep := h.Check(ctx)
	if rep.Ready || !rep.Live || rep.Checks[1].Ready || rep.Checks[1].Error == "" {
		t.Errorf("with the store closed: %+v", rep)
	}
}
