package kafkabus

import (
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
		r.Value = driver.EncodeStructured(m)
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
			structured = driver.IsStructured(ct)
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

// decodeStructured reads a record in structured content mode (the JSON event
// format in the value). The record key wins over the event's partitionkey;
// headers other than the driver's stay free headers.
func decodeStructured(r *kgo.Record) (*driver.Message, error) {
	m, err := driver.DecodeStructured(r.Value)
	if len(r.Key) > 0 {
		m.Key = string(r.Key)
	}
	for _, h := range r.Headers {
		if h.Key == contentTypeHeader || h.Key == attemptsHeader {
			continue
		}
		if m.Header == nil {
			m.Header = make(map[string][]string, 2)
		}
		m.Header[h.Key] = append(m.Header[h.Key], string(h.Value))
	}
	return m, err
}
