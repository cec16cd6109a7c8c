package kafkabus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver"
)

// Header names of the CloudEvents Kafka protocol binding, and the one header
// of the driver's own.
const (
	cePrefix              = "ce_"
	contentTypeHeader     = "content-type"
	structuredContentType = "application/cloudevents+json"
	// attemptsHeader counts the deliveries a message had before it went to
	// a retry topic. It is removed on receipt.
	attemptsHeader = "eventbus-attempts"
)

// maxTopicLen is Kafka's limit on a topic name.
const maxTopicLen = 249

func legalTopicRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// topicName maps a logical destination name onto a Kafka topic: the prefix,
// then the name with every character Kafka refuses replaced by '_'. A name
// that had to change, or is too long, gets a hash of the exact name
// appended, so that two names never share a topic.
func topicName(prefix, name string) string {
	t := prefix + name
	clean := strings.Map(func(r rune) rune {
		if legalTopicRune(r) {
			return r
		}
		return '_'
	}, t)
	if clean == t && len(t) <= maxTopicLen && t != "." && t != ".." {
		return t
	}
	h := fnv.New64a()
	h.Write([]byte(t))
	suffix := "-" + strconv.FormatUint(h.Sum64(), 36)
	if len(clean) > maxTopicLen-len(suffix) {
		clean = clean[:maxTopicLen-len(suffix)]
	}
	return clean + suffix
}

// retryTopicName is the topic a group's nacked messages go to once their
// in-place retries are spent.
func retryTopicName(topic, groupID string) string {
	return topicName("", topic+".retry."+groupID)
}

// encode maps m onto a record in the content mode it asks for: binary mode
// puts every attribute in a ce_ header and datacontenttype in content-type;
// structured mode puts the JSON event format in the value. Message.Key is
// the record key and, as the binding asks, the partitionkey attribute; on
// receipt the record key wins, and partitionkey fills in for a record
// without one. Free headers are record headers, one per value.
func encode(topic string, m *driver.Message) *kgo.Record {
	r := &kgo.Record{Topic: topic}
	if m.Key != "" {
		r.Key = []byte(m.Key)
	}
	n := 0
	for _, vs := range m.Header {
		n += len(vs)
	}
	if m.Mode == driver.Structured {
		r.Headers = make([]kgo.RecordHeader, 0, n+1)
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: contentTypeHeader, Value: []byte(structuredContentType)})
		r.Value = encodeStructured(m)
	} else {
		r.Headers = make([]kgo.RecordHeader, 0, n+11+len(m.Extensions))
		if m.Key != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: cePrefix + driver.ExtPartitionKey, Value: r.Key})
		}
		m.EachAttribute(func(name, value string) {
			if name == "datacontenttype" {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: contentTypeHeader, Value: []byte(value)})
				return
			}
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: cePrefix + name, Value: []byte(value)})
		})
		r.Value = m.Data
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	return r
}

// recordSize is an upper bound of the bytes r takes in a record batch.
func recordSize(r *kgo.Record) int {
	n := 32 + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// decode reads a record as an envelope, in either content mode. It returns
// the message, the number of deliveries it had before (from a retry topic),
// and an error matching driver.ErrMalformed for a record that is not a valid
// event; the message then holds what could be read and the raw value.
func decode(r *kgo.Record) (*driver.Message, int, error) {
	var (
		ct, hasCT  = "", false
		structured bool
		attempts   int
		hasSpec    bool
	)
	for _, h := range r.Headers {
		switch {
		case h.Key == contentTypeHeader:
			ct, hasCT = string(h.Value), true
			structured = isStructured(ct)
		case h.Key == attemptsHeader:
			attempts, _ = strconv.Atoi(string(h.Value))
		case h.Key == cePrefix+"specversion":
			hasSpec = true
		}
	}
	if structured {
		m, err := decodeStructured(r)
		if m.Key == "" && len(r.Key) > 0 {
			m.Key = string(r.Key)
		}
		return m, attempts, err
	}
	m := &driver.Message{Data: r.Value, Key: string(r.Key)}
	var errs []error
	for _, h := range r.Headers {
		switch {
		case h.Key == contentTypeHeader || h.Key == attemptsHeader:
		case len(h.Key) > len(cePrefix) && strings.EqualFold(h.Key[:len(cePrefix)], cePrefix):
			name := strings.ToLower(h.Key[len(cePrefix):])
			if name == driver.ExtPartitionKey {
				// The key itself: the record key wins, this fills in
				// for a record without one.
				if m.Key == "" {
					m.Key = string(h.Value)
				}
				continue
			}
			if !utf8.Valid(h.Value) {
				errs = append(errs, &driver.MalformedError{Reason: "header " + strconv.Quote(h.Key) + " is not UTF-8"})
				continue
			}
			if err := m.SetAttribute(name, string(h.Value)); err != nil {
				errs = append(errs, err)
			}
		default:
			if m.Header == nil {
				m.Header = make(map[string][]string, 2)
			}
			m.Header[h.Key] = append(m.Header[h.Key], string(h.Value))
		}
	}
	if hasCT && m.DataContentType == "" {
		m.DataContentType = ct
	}
	if len(errs) > 0 {
		return m, attempts, errs[0]
	}
	if !hasSpec {
		return m, attempts, &driver.MalformedError{Reason: "no ce_specversion header and no structured event: not a CloudEvent"}
	}
	if err := m.Validate(); err != nil {
		return m, attempts, err
	}
	return m, attempts, nil
}

// isStructured reports whether a content type marks a structured-mode event:
// a media type of application/cloudevents, matched case-insensitively.
func isStructured(contentType string) bool {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	return strings.HasPrefix(ct, "application/cloudevents") && !strings.HasPrefix(ct, "application/cloudevents-batch")
}

// decodeStructured reads an event in structured content mode, JSON event
// format: what the driver sends for a message whose Mode is
// driver.Structured, and what CloudEvents SDKs send when asked to.
func decodeStructured(r *kgo.Record) (*driver.Message, error) {
	m := &driver.Message{Data: r.Value, Mode: driver.Structured}
	for _, h := range r.Headers {
		if h.Key == contentTypeHeader || h.Key == attemptsHeader {
			continue
		}
		if m.Header == nil {
			m.Header = make(map[string][]string, 2)
		}
		m.Header[h.Key] = append(m.Header[h.Key], string(h.Value))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(r.Value, &fields); err != nil {
		return m, &driver.MalformedError{Reason: "structured event is not a JSON object", Err: err}
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
				return m, &driver.MalformedError{Reason: "data_base64 is not a string", Err: err}
			}
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return m, &driver.MalformedError{Reason: "data_base64 is not base64", Err: err}
			}
			data, hasData = b, true
			continue
		}
		v, err := attributeText(raw)
		if err != nil {
			return m, &driver.MalformedError{Reason: "attribute " + strconv.Quote(name), Err: err}
		}
		if name == driver.ExtPartitionKey {
			if len(r.Key) == 0 {
				m.Key = v
			}
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
		return m, &driver.MalformedError{Reason: "missing specversion attribute"}
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
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

// encodeStructured writes m in the JSON event format: every attribute and
// extension a top-level member, data inline when its content type is JSON
// and it is valid JSON, else in data_base64.
func encodeStructured(m *driver.Message) []byte {
	b := make([]byte, 0, 256+len(m.Data)*4/3)
	b = append(b, '{')
	seen := make(map[string]bool, 16)
	member := func(name, value string) {
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
		member(driver.ExtPartitionKey, m.Key)
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

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == utf8.RuneError }) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	enc, _ := json.Marshal(s)
	return append(b, enc...)
}
