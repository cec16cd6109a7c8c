package eventbus

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
)

// Step is one stage of a Pipeline: it maps a message to zero, one or several
// messages. It may modify and return the message it is given (the pipeline
// hands it a copy), or return new ones; nil entries are skipped. An error
// stops the pipeline; wrap it with Permanent when retrying cannot help.
type Step interface {
	Apply(ctx context.Context, m *Message) ([]*Message, error)
}

// StepFunc adapts a function to Step.
type StepFunc func(ctx context.Context, m *Message) ([]*Message, error)

// Apply calls f.
func (f StepFunc) Apply(ctx context.Context, m *Message) ([]*Message, error) { return f(ctx, m) }

// Pipeline is an ordered list of steps, each applied to every message the
// previous one returned. Declare one per subscription (WithPipeline), per
// route on publish (Route.Pipeline) or per bridge (Bridge.Pipeline); test it
// alone with Apply. A Pipeline is immutable and safe for concurrent use if
// its steps are.
type Pipeline struct {
	steps []Step
}

// NewPipeline returns the pipeline of steps, in order.
func NewPipeline(steps ...Step) *Pipeline {
	return &Pipeline{steps: append([]Step(nil), steps...)}
}

// Then returns a new pipeline: p's steps, then steps.
func (p *Pipeline) Then(steps ...Step) *Pipeline {
	var own []Step
	if p != nil {
		own = p.steps
	}
	return &Pipeline{steps: append(append([]Step(nil), own...), steps...)}
}

// Apply runs m through the pipeline and returns what comes out. m itself is
// not modified: the first step gets a copy. A nil or empty pipeline returns
// that copy alone. A panicking step is an error (*PanicError).
func (p *Pipeline) Apply(ctx context.Context, m *Message) ([]*Message, error) {
	out, err := p.apply(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("eventbus: %w", err)
	}
	return out, nil
}

// apply is Apply for the bus's own operations, which add their context to
// its error ("pipeline step 2: ...").
func (p *Pipeline) apply(ctx context.Context, m *Message) ([]*Message, error) {
	cur := []*Message{m.Clone()}
	if p == nil {
		return cur, nil
	}
	for i, s := range p.steps {
		var next []*Message
		for j, in := range cur {
			out, err := applyStep(ctx, s, in)
			if err != nil {
				return nil, fmt.Errorf("pipeline step %d: %w", i+1, err)
			}
			if len(cur) == 1 && len(out) == 1 && out[0] != nil {
				// The common case, one message in and one out: no new slice.
				next = out
				break
			}
			if next == nil {
				next = make([]*Message, 0, len(cur)-j+len(out))
			}
			for _, o := range out {
				if o != nil {
					next = append(next, o)
				}
			}
		}
		if cur = next; len(cur) == 0 {
			return nil, nil
		}
	}
	return cur, nil
}

// applyStep runs one step, turning a panic into a *PanicError.
func applyStep(ctx context.Context, s Step, m *Message) (out []*Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return s.Apply(ctx, m)
}

func (p *Pipeline) wrapHandler(h Handler) Handler {
	return HandlerFunc(func(ctx context.Context, m *Message) error {
		outs, err := p.apply(ctx, m)
		if err != nil {
			return err
		}
		for _, o := range outs {
			if err := h.Handle(ctx, o); err != nil {
				return err
			}
		}
		return nil
	})
}

func (p *Pipeline) wrapBatch(h BatchHandler) BatchHandler {
	return BatchHandlerFunc(func(ctx context.Context, ms []*Message) error {
		var all []*Message
		for _, m := range ms {
			outs, err := p.apply(ctx, m)
			if err != nil {
				return err
			}
			all = append(all, outs...)
		}
		if len(all) == 0 {
			return nil
		}
		return h.HandleBatch(ctx, all)
	})
}

// Map is a one-to-one step: fn returns the message to pass on (m itself,
// modified or not, or a new one), or nil to drop it.
func Map(fn func(ctx context.Context, m *Message) (*Message, error)) Step {
	return StepFunc(func(ctx context.Context, m *Message) ([]*Message, error) {
		out, err := fn(ctx, m)
		if err != nil || out == nil {
			return nil, err
		}
		return []*Message{out}, nil
	})
}

// Keep passes on the messages mt matches and drops the others.
func Keep(mt *Matcher) Step {
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		if !mt.Match(m) {
			return nil, nil
		}
		return []*Message{m}, nil
	})
}

// SetExtension sets the CloudEvents extension name to value on every
// message (enrichment).
func SetExtension(name, value string) Step {
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		if m.Extensions == nil {
			m.Extensions = make(map[string]string, 1)
		}
		m.Extensions[name] = value
		return []*Message{m}, nil
	})
}

// RenameExtension renames the extension from to to, on messages that carry
// it.
func RenameExtension(from, to string) Step {
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		if v, ok := m.Extensions[from]; ok {
			delete(m.Extensions, from)
			m.Extensions[to] = v
		}
		return []*Message{m}, nil
	})
}

// RedactJSON removes the fields at the dot-separated paths ("card.number")
// from a JSON object payload. A payload that is not a JSON object is a
// permanent error.
func RedactJSON(paths ...string) Step {
	split := make([][]string, len(paths))
	for i, p := range paths {
		split[i] = strings.Split(p, ".")
	}
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		var doc map[string]any
		if err := json.Unmarshal(m.Data, &doc); err != nil {
			return nil, Permanent(fmt.Errorf("redact: data is not a JSON object: %w", err))
		}
		for _, path := range split {
			obj := doc
			for _, k := range path[:len(path)-1] {
				if obj, _ = obj[k].(map[string]any); obj == nil {
					break
				}
			}
			if obj != nil {
				delete(obj, path[len(path)-1])
			}
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, Permanent(fmt.Errorf("redact: %w", err))
		}
		m.Data = data
		return []*Message{m}, nil
	})
}

// Upcast converts messages of type from to type to with convert applied to
// their data (a new version of a payload); other messages pass unchanged.
func Upcast(from, to string, convert func(data []byte) ([]byte, error)) Step {
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		if m.Type != from {
			return []*Message{m}, nil
		}
		data, err := convert(m.Data)
		if err != nil {
			return nil, fmt.Errorf("upcast %s to %s: %w", from, to, err)
		}
		m.Type, m.Data = to, data
		return []*Message{m}, nil
	})
}

// Recode decodes the data of every message with the codec its
// datacontenttype names (among the JSON codec and codecs) and encodes it
// again with to, recording to's content type.
func Recode(to Codec, codecs ...Codec) Step {
	cs := newCodecs(to, codecs)
	return StepFunc(func(_ context.Context, m *Message) ([]*Message, error) {
		var v any
		if err := cs.decode(m, &v); err != nil {
			return nil, Permanent(err)
		}
		if err := cs.encode(m, v); err != nil {
			return nil, Permanent(err)
		}
		return []*Message{m}, nil
	})
}

// MapData is a typed one-to-one step on JSON payloads: it decodes the data
// into In, calls fn, and encodes what it returns as the new data. Data that
// does not decode is a permanent error (*DecodeError).
func MapData[In, Out any](fn func(ctx context.Context, in In) (Out, error)) Step {
	return StepFunc(func(ctx context.Context, m *Message) ([]*Message, error) {
		var in In
		if err := defaultCodecs.decode(m, &in); err != nil {
			return nil, Permanent(err)
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		if err := defaultCodecs.encode(m, out); err != nil {
			return nil, Permanent(err)
		}
		return []*Message{m}, nil
	})
}
