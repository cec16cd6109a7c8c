package middleware

import (
	"context"

	"github.com/marty-msf/eventbus"
)

type incomingKey struct{}

// Correlate puts the incoming message into the handler's context, where
// Incoming and Caused find it.
func Correlate() eventbus.Middleware {
	return func(next eventbus.Handler) eventbus.Handler {
		return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			return next.Handle(WithIncoming(ctx, m), m)
		})
	}
}

// WithIncoming returns a context that carries m as the message being
// handled. Correlate calls it; a query or batch handler may call it itself.
func WithIncoming(ctx context.Context, m *eventbus.Message) context.Context {
	return context.WithValue(ctx, incomingKey{}, m)
}

// Incoming returns the message being handled, as Correlate or WithIncoming
// put it into ctx, or nil. The handler must not modify it.
func Incoming(ctx context.Context) *eventbus.Message {
	m, _ := ctx.Value(incomingKey{}).(*eventbus.Message)
	return m
}

// Caused stamps out, a message about to be published while the message in
// ctx is handled: its CorrelationID becomes the incoming message's
// correlation id (or, when that is empty, the incoming id: the incoming
// message starts the conversation), and its CausationID the incoming id.
// Ids already set on out are kept. Without an incoming message in ctx, out
// is left as it is. It returns out.
func Caused(ctx context.Context, out *eventbus.Message) *eventbus.Message {
	in := Incoming(ctx)
	if in == nil || out == nil {
		return out
	}
	if out.CorrelationID == "" {
		out.CorrelationID = in.CorrelationID
		if out.CorrelationID == "" {
			out.CorrelationID = in.ID
		}
	}
	if out.CausationID == "" {
		out.CausationID = in.ID
	}
	return out
}
