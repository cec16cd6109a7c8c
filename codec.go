package eventbus

import (
	"encoding/json"
	"fmt"
)

// Codec encodes typed payloads into Message.Data and back. The content type it
// reports is recorded in Message.DataContentType, so a receiver picks the
// matching codec by content type.
type Codec interface {
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json with content type
// "application/json".
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) ContentType() string             { return "application/json" }
func (jsonCodec) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (jsonCodec) Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// codecs picks a codec by content type; the bus's own codec first.
type codecs struct {
	primary Codec
	byType  map[string]Codec
}

func newCodecs(primary Codec, extra []Codec) *codecs {
	if primary == nil {
		primary = JSON
	}
	c := &codecs{primary: primary, byType: map[string]Codec{}}
	for _, x := range append([]Codec{JSON}, extra...) {
		c.byType[x.ContentType()] = x
	}
	c.byType[primary.ContentType()] = primary
	return c
}

func (c *codecs) forContentType(ct string) (Codec, error) {
	if ct == "" {
		// CloudEvents: absent datacontenttype means JSON.
		return JSON, nil
	}
	if ct == c.primary.ContentType() {
		return c.primary, nil
	}
	if x, ok := c.byType[ct]; ok {
		return x, nil
	}
	if x, ok := c.byType[mediaType(ct)]; ok {
		return x, nil
	}
	return nil, fmt.Errorf("no codec for content type %q", ct)
}

// mediaType strips parameters: "application/json; charset=utf-8" → "application/json".
func mediaType(ct string) string {
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' || ct[i] == ' ' {
			return ct[:i]
		}
	}
	return ct
}

func (c *codecs) encode(m *Message, v any) error {
	data, err := c.primary.Marshal(v)
	if err != nil {
		return fmt.Errorf("eventbus: encode %T: %w", v, err)
	}
	m.Data = data
	m.DataContentType = c.primary.ContentType()
	return nil
}

func (c *codecs) decode(m *Message, v any) error {
	codec, err := c.forContentType(m.DataContentType)
	if err == nil {
		err = codec.Unmarshal(m.Data, v)
	}
	if err != nil {
		return &DecodeError{ContentType: m.DataContentType, Target: fmt.Sprintf("%T", v), Err: err}
	}
	return nil
}
