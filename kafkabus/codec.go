package kafkabus

import (
	"hash/fnv"
	"strconv"
	"strings"
	"time"
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
	return newRecordSlab([]*driver.Message{m}).encode(topic, m)
}

// recordSlab holds the records of one publish, their headers and the bytes
// of their keys and header values in three blocks, so that a batch of n
// messages costs a few allocations, not a dozen per message; a publish of
// one message that fits in the slab's own arrays allocates the slab alone.
// Its waiter collects the records' promises.
type recordSlab struct {
	recs []kgo.Record
	hdrs []kgo.RecordHeader
	buf  []byte

	oneRec  [1]kgo.Record
	oneHdrs [8]kgo.RecordHeader
	oneBuf  [256]byte

	waiter
}

// newRecordSlab returns a slab sized for msgs.
func newRecordSlab(msgs []*driver.Message) *recordSlab {
	rs := new(recordSlab)
	rs.grow(msgs)
	return rs
}

// grow sizes the slab for msgs.
func (rs *recordSlab) grow(msgs []*driver.Message) {
	hdrs, bytes := 0, 0
	for _, m := range msgs {
		for _, vs := range m.Header {
			hdrs += len(vs)
		}
		// specversion, id, source, type, time and the partition key or
		// content-type: what most events carry; a record with more
		// attributes grows the block.
		hdrs += 6 + len(m.Extensions)
		// Data is not copied: the record's value is m.Data itself.
		bytes += m.Size() - len(m.Data) + 48
	}
	if len(msgs) == 1 && hdrs <= len(rs.oneHdrs) && bytes <= len(rs.oneBuf) {
		rs.recs, rs.hdrs, rs.buf = rs.oneRec[:0], rs.oneHdrs[:0], rs.oneBuf[:0]
		return
	}
	rs.recs = make([]kgo.Record, 0, len(msgs))
	rs.hdrs = make([]kgo.RecordHeader, 0, hdrs)
	rs.buf = make([]byte, 0, bytes)
}

// bytes appends v to the slab and returns its copy there. A slab that
// outgrows its block moves on to a new one; what was handed out stays
// where it is.
func (rs *recordSlab) bytes(v string) []byte {
	start := len(rs.buf)
	rs.buf = append(rs.buf, v...)
	return rs.buf[start:len(rs.buf):len(rs.buf)]
}

// header appends a header of the slab's next record, unless value is empty.
func (rs *recordSlab) header(key, value string) {
	if value != "" {
		rs.hdrs = append(rs.hdrs, kgo.RecordHeader{Key: key, Value: rs.bytes(value)})
	}
}

// encode maps m onto the slab's next record; see the function encode.
func (rs *recordSlab) encode(topic string, m *driver.Message) *kgo.Record {
	rs.recs = append(rs.recs, kgo.Record{Topic: topic})
	r := &rs.recs[len(rs.recs)-1]
	if m.Key != "" {
		r.Key = rs.bytes(m.Key)
	}
	start := len(rs.hdrs)
	if m.Mode == driver.Structured {
		rs.hdrs = append(rs.hdrs, kgo.RecordHeader{Key: contentTypeHeader, Value: []byte(structuredContentType)})
		r.Value = driver.EncodeStructured(m)
	} else {
		if m.Key != "" {
			rs.hdrs = append(rs.hdrs, kgo.RecordHeader{Key: cePrefix + driver.ExtPartitionKey, Value: r.Key})
		}
		// The attributes of EachAttribute, in its order, written straight
		// into the slab: the time without a string of its own.
		rs.header("ce_specversion", driver.SpecVersion)
		rs.header("ce_id", m.ID)
		rs.header("ce_source", m.Source)
		rs.header("ce_type", m.Type)
		rs.header("ce_subject", m.Subject)
		if !m.Time.IsZero() {
			at := len(rs.buf)
			rs.buf = m.Time.UTC().AppendFormat(rs.buf, time.RFC3339Nano)
			rs.hdrs = append(rs.hdrs, kgo.RecordHeader{Key: "ce_time", Value: rs.buf[at:len(rs.buf):len(rs.buf)]})
		}
		rs.header(contentTypeHeader, m.DataContentType)
		rs.header("ce_dataschema", m.DataSchema)
		rs.header(cePrefix+driver.ExtCorrelationID, m.CorrelationID)
		rs.header(cePrefix+driver.ExtCausationID, m.CausationID)
		rs.header(cePrefix+driver.ExtTraceParent, m.TraceParent)
		rs.header(cePrefix+driver.ExtTraceState, m.TraceState)
		rs.header(cePrefix+driver.ExtReplyTo, m.ReplyTo)
		for name, value := range m.Extensions {
			rs.header(cePrefix+name, value)
		}
		r.Value = m.Data
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			rs.hdrs = append(rs.hdrs, kgo.RecordHeader{Key: k, Value: rs.bytes(v)})
		}
	}
	r.Headers = rs.hdrs[start:len(rs.hdrs):len(rs.hdrs)]
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
	return decodeInto(new(driver.Message), r, new(strings.Builder))
}

// headerBytes is how many bytes the key and header values of r take.
func headerBytes(r *kgo.Record) int {
	n := len(r.Key)
	for _, h := range r.Headers {
		n += len(h.Value)
	}
	return n
}

// decodeInto is decode into m, a zero Message. The key and header values of
// a binary-mode record are written to sb and become substrings of it:
// records decoded through one builder share one allocation.
func decodeInto(m *driver.Message, r *kgo.Record, sb *strings.Builder) (*driver.Message, int, error) {
	var (
		ct, hasCT  = -1, false
		structured bool
		attempts   int
		hasSpec    bool
		size       = len(r.Key)
	)
	for i, h := range r.Headers {
		switch {
		case h.Key == contentTypeHeader:
			ct, hasCT = i, true
			structured = driver.IsStructured(string(h.Value))
		case h.Key == attemptsHeader:
			attempts, _ = strconv.Atoi(string(h.Value))
		case h.Key == cePrefix+"specversion":
			hasSpec = true
		}
		size += len(h.Value)
	}
	if structured {
		sm, err := decodeStructured(r)
		if sm.Key == "" && len(r.Key) > 0 {
			sm.Key = string(r.Key)
		}
		return sm, attempts, err
	}
	from := sb.Len()
	sb.Grow(size)
	sb.Write(r.Key)
	for _, h := range r.Headers {
		sb.Write(h.Value)
	}
	all := sb.String()[from:]
	m.Data, m.Key = r.Value, all[:len(r.Key)]
	at := len(r.Key)
	var (
		errs        []error
		contentType string
	)
	for i, h := range r.Headers {
		value := all[at : at+len(h.Value)]
		at += len(h.Value)
		switch {
		case i == ct:
			contentType = value
		case h.Key == contentTypeHeader || h.Key == attemptsHeader:
		case len(h.Key) > len(cePrefix) && strings.EqualFold(h.Key[:len(cePrefix)], cePrefix):
			name := strings.ToLower(h.Key[len(cePrefix):])
			if name == driver.ExtPartitionKey {
				// The key itself: the record key wins, this fills in
				// for a record without one.
				if m.Key == "" {
					m.Key = value
				}
				continue
			}
			if !utf8.ValidString(value) {
				errs = append(errs, &driver.MalformedError{Reason: "header " + strconv.Quote(h.Key) + " is not UTF-8"})
				continue
			}
			if err := m.SetAttribute(name, value); err != nil {
				errs = append(errs, err)
			}
		default:
			if m.Header == nil {
				m.Header = make(map[string][]string, 2)
			}
			m.Header[h.Key] = append(m.Header[h.Key], value)
		}
	}
	if hasCT && m.DataContentType == "" {
		m.DataContentType = contentType
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
