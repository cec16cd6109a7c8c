package eventbus

import (
	"context"
	"runtime/debug"
)

// Handler processes one message. Returning nil acknowledges it; an error has
// it redelivered with backoff until the bus's retry policy gives up, and then
// dead-lettered; an error marked with Permanent dead-letters it at once.
// Handlers may run concurrently (see WithConcurrency) and must honour ctx,
// which is cancelled when the bus is closed and its drain deadline passes.
type Handler interface {
	Handle(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Message) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m *Message) error { return f(ctx, m) }

// QueryHandler answers a query. A nil error sends the returned message as the
// reply (a nil message sends an empty reply); an error is carried back to the
// caller as a *RemoteError.
type QueryHandler interface {
	HandleQuery(ctx context.Context, m *Message) (*Message, error)
}

// QueryHandlerFunc adapts a function to QueryHandler.
type QueryHandlerFunc func(ctx context.Context, m *Message) (*Message, error)

// HandleQuery calls f.
func (f QueryHandlerFunc) HandleQuery(ctx context.Context, m *Message) (*Message, error) {
	return f(ctx, m)
}

// BatchHandler processes a batch of stream messages. nil acknowledges the
// whole batch; an error has the whole batch redelivered (Permanent
// dead-letters it).
type BatchHandler interface {
	HandleBatch(ctx context.Context, ms []*Message) error
}

// BatchHandlerFunc adapts a function to BatchHandler.
type BatchHandlerFunc func(ctx context.Context, ms []*Message) error

// HandleBatch calls f.
func (f BatchHandlerFunc) HandleBatch(ctx context.Context, ms []*Message) error { return f(ctx, ms) }

// Middleware wraps a Handler, net/http style. The bus applies Options.Middleware
// to every message handler, the first element outermost.
type Middleware func(Handler) Handler

func chain(h Handler, mws []Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// safely runs fn, turning a panic into a *PanicError.
func safely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn()
}
