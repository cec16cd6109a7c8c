package eventbus

import (
	"context"
	"fmt"
)

func codecsOf(ctx context.Context) *codecs {
	if b := busFrom(ctx); b != nil {
		return b.codecs
	}
	return defaultCodecs
}

// Typed adapts a function taking a decoded payload to a Handler. Data that
// cannot be decoded into T is a permanent *DecodeError: the message is
// dead-lettered with it as the reason, never retried.
func Typed[T any](fn func(ctx context.Context, m *Message, v T) error) Handler {
	if fn == nil {
		return HandlerFunc(nil) // refused at registration with ErrNilHandler
	}
	return HandlerFunc(func(ctx context.Context, m *Message) error {
		var v T
		if err := codecsOf(ctx).decode(m, &v); err != nil {
			return Permanent(err)
		}
		return fn(ctx, m, v)
	})
}

// TypedQuery adapts a function from a decoded request to a response value to
// a QueryHandler. The response is encoded with the bus's codec; a request that
// cannot be decoded is answered with a *DecodeError the caller sees as a
// RemoteError with code "decode".
func TypedQuery[Req, Resp any](fn func(ctx context.Context, m *Message, req Req) (Resp, error)) QueryHandler {
	if fn == nil {
		return QueryHandlerFunc(nil)
	}
	return QueryHandlerFunc(func(ctx context.Context, m *Message) (*Message, error) {
		cs := codecsOf(ctx)
		var req Req
		if err := cs.decode(m, &req); err != nil {
			return nil, &CodedError{Code: "decode", Err: err}
		}
		resp, err := fn(ctx, m, req)
		if err != nil {
			return nil, err
		}
		out := &Message{}
		if err := cs.encode(out, resp); err != nil {
			return nil, err
		}
		return out, nil
	})
}

// TypedBatch adapts a function taking decoded payloads to a BatchHandler. If
// any message of the batch cannot be decoded the batch fails permanently.
func TypedBatch[T any](fn func(ctx context.Context, ms []*Message, vs []T) error) BatchHandler {
	if fn == nil {
		return BatchHandlerFunc(nil)
	}
	return BatchHandlerFunc(func(ctx context.Context, ms []*Message) error {
		cs := codecsOf(ctx)
		vs := make([]T, len(ms))
		for i, m := range ms {
			if err := cs.decode(m, &vs[i]); err != nil {
				return Permanent(fmt.Errorf("message %s: %w", m.ID, err))
			}
		}
		return fn(ctx, ms, vs)
	})
}

// Ask sends req, encoded with the bus's codec, as a query of type queryType to
// service and decodes the reply into Resp. Errors are those of Bus.Query, or a
// *DecodeError.
func Ask[Resp any](ctx context.Context, b *Bus, service, queryType string, req any) (Resp, error) {
	var resp Resp
	m, err := b.NewMessage(queryType, req)
	if err != nil {
		return resp, err
	}
	reply, err := b.Query(ctx, service, m)
	if err != nil {
		return resp, err
	}
	if err := b.codecs.decode(reply, &resp); err != nil {
		return resp, fmt.Errorf("eventbus: query %s.%s: %w", service, queryType, err)
	}
	return resp, nil
}
