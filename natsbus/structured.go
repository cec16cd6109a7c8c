package natsbus

import (
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

// decodeStructured reads an event in structured content mode, JSON event
// format: what CloudEvents SDKs send over NATS by default, and what the
// driver sends for a message whose Mode is driver.Structured. Free NATS
// headers stay headers; ctKey is the Content-Type header's name, or "" when
// there is none.
func decodeStructured(h nats.Header, ctKey string, body []byte) (*driver.Message, error) {
	m, err := driver.DecodeStructured(body)
	for k, vs := range h {
		if k == ctKey || k == msgIDHeader {
			continue
		}
		if m.Header == nil {
			m.Header = make(map[string][]string, len(h))
		}
		m.Header[k] = vs
	}
	return m, err
}

// encodeStructured maps m onto a NATS message in structured content mode
// (driver.EncodeStructured in the body). Free headers stay NATS headers;
// msgID adds the de-duplication header, as in binary mode.
func encodeStructured(subject string, m *driver.Message, msgID bool) *nats.Msg {
	h := make(nats.Header, len(m.Header)+2)
	for k, vs := range m.Header {
		h[k] = slices.Clone(vs)
	}
	h[contentType] = []string{driver.StructuredContentType}
	if msgID && m.ID != "" {
		h[msgIDHeader] = []string{dedupID(m.Source, m.ID, subject, m.DedupParts())}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: driver.EncodeStructured(m)}
}
