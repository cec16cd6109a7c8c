package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps next so that each record logged with a context (the
// *Context functions and methods of slog) carries the trace_id and span_id
// of the context's span and, within a handler, the handled message's
// message_id, correlation_id and type. It adds nothing else: no payloads.
func LogHandler(next slog.Handler) slog.Handler { return logHandler{next} }

type logHandler struct{ next slog.Handler }

func (h logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if m := Handled(ctx); m != nil {
		r.AddAttrs(slog.String("message_id", m.ID), slog.String("type", m.Type))
		if m.CorrelationID != "" {
			r.AddAttrs(slog.String("correlation_id", m.CorrelationID))
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{h.next.WithAttrs(attrs)}
}

func (h logHandler) WithGroup(name string) slog.Handler { return logHandler{h.next.WithGroup(name)} }
