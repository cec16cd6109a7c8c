package driver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// StructuredContentType is the content type of an event in structured
// content mode, JSON event format.
const StructuredContentType = "application/cloudevents+json"

// IsStructured reports whether a content type marks a structured-mode event:
// the protocol bindings' rule is a media type of application/cloudevents,
// matched case-insensitively (a batch, application/cloudevents-batch, is
// not one event).
func IsStructured(contentType string) bool {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	return strings.HasPrefix(ct, "application/cloudevents") && !strings.HasPrefix(ct, "application/cloudevents-batch")
}

// LooksLikeJSONObject reports, cheaply, whether body may be a JSON object:
// for brokers whose messages may carry no content type, a body that looks
// like one is tried as a structured event.
func LooksLikeJSONObject(body []byte) bool {
	body = bytes.TrimSpace(body)
	return len(body) >= 2 && body[0] == '{' && body[len(body)-1] == '}'
}

// EncodeStructured returns m in the CloudEvents JSON event format: every
// attribute and extension a top-level member (the key as "partitionkey"),
// data inline when its content type is JSON and it is valid JSON, else in
// data_base64. An extension never replaces an attribute. Transport headers
// are the driver's to carry.
func EncodeStructured(m *Message) []byte {
	b := make([]byte, 0, 256+len(m.Data)*4/3)
	b = append(b, '{')
	seen := make(map[string]bool, 16)
	member := func(name, value string) {
		// The first writer of a name wins: Message's own fields come first.
		if seen[name] {
			return
		}
		seen[name] = true
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = appendJSONString(b, name)
		b = append(b, ':')
		b = appendJSONString(b, value)
	}
	if m.Key != "" {
		member(ExtPartitionKey, m.Key)
	}
	m.EachAttribute(member)
	if len(m.Data) > 0 {
		if isJSONType(m.DataContentType) && json.Valid(m.Data) && len(bytes.TrimSpace(m.Data)) == len(m.Data) {
			b = append(b, `,"data":`...)
			b = append(b, m.Data...)
		} else {
			b = append(b, `,"data_base64":"`...)
			b = base64.StdEncoding.AppendEncode(b, m.Data)
			b = append(b, '"')
		}
	}
	return append(b, '}')
}

// DecodeStructured reads an event in the CloudEvents JSON event format, as
// CloudEvents SDKs send it in structured mode. The message has Mode
// Structured and the "partitionkey" member as its Key. When body is not a
// valid event the error is a *MalformedError and the message holds what
// could be read, with Data the raw body, so that it can be dead-lettered.
func DecodeStructured(body []byte) (*Message, error) {
	m := &Message{Data: body, Mode: Structured}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return m, &MalformedError{Reason: "structured event is not a JSON object", Err: err}
	}
	var data []byte
	hasData := false
	for name, raw := range fields {
		switch name {
		case "data":
			data, hasData = raw, true
			continue
		case "data_base64":
			var enc string
			if err := json.Unmarshal(raw, &enc); err != nil {
				return m, &MalformedError{Reason: "data_base64 is not a string", Err: err}
			}
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return m, &MalformedError{Reason: "data_base64 is not base64", Err: err}
			}
			data, hasData = b, true
			continue
		}
		v, err := attributeText(raw)
		if err != nil {
			return m, &MalformedError{Reason: "attribute " + quote(name), Err: err}
		}
		if name == ExtPartitionKey {
			m.Key = v
			continue
		}
		if err := m.SetAttribute(name, v); err != nil {
			return m, err
		}
	}
	if _, ok := fields["data"]; ok && isJSONString(data) && !isJSONType(m.DataContentType) {
		// A string value under a non-JSON content type is the text itself.
		var text string
		if err := json.Unmarshal(data, &text); err == nil {
			data = []byte(text)
		}
	}
	if _, ok := fields["specversion"]; !ok {
		return m, &MalformedError{Reason: "missing specversion attribute"}
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	// Only a valid event trades the raw body for its data.
	m.Data = nil
	if hasData {
		m.Data = data
	}
	return m, nil
}

// attributeText is the canonical string of a JSON attribute value: strings
// as they are, numbers and booleans as written.
func attributeText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch v.(type) {
	case float64, bool:
		return string(raw), nil
	}
	return "", errors.New("not a string, number or boolean")
}

func isJSONString(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '"'
}

// isJSONType reports whether a datacontenttype is JSON, in which case data
// in a structured event is the JSON value itself. An absent type means JSON.
func isJSONType(ct string) bool {
	ct = strings.ToLower(ct)
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	return ct == "" || ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

// appendJSONString appends s as a JSON string. Attribute values are valid
// UTF-8 without control characters (CheckEnvelope), so mostly only the quote
// and the backslash could need escaping; anything unusual goes through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == utf8.RuneError }) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	enc, _ := json.Marshal(s)
	return append(b, enc...)
}
