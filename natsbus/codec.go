package natsbus

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

// The CloudEvents NATS protocol binding, binary content mode: every attribute
// and extension travels as a header named "ce-" + its name, with a
// percent-encoded value; the body is the data, as is. The partition key
// travels as the "partitionkey" extension.
const (
	cePrefix     = "ce-"
	msgIDHeader  = "Nats-Msg-Id"
	contentType  = "Content-Type"
	partitionKey = "ce-" + driver.ExtPartitionKey
)

// ceHeader returns the header name of a CloudEvents attribute, without
// allocating for the attributes every message carries.
func ceHeader(name string) string {
	switch name {
	case "specversion":
		return "ce-specversion"
	case "id":
		return "ce-id"
	case "source":
		return "ce-source"
	case "type":
		return "ce-type"
	case "subject":
		return "ce-subject"
	case "time":
		return "ce-time"
	case "datacontenttype":
		return "ce-datacontenttype"
	case "dataschema":
		return "ce-dataschema"
	case driver.ExtCorrelationID:
		return "ce-correlationid"
	case driver.ExtCausationID:
		return "ce-causationid"
	case driver.ExtTraceParent:
		return "ce-traceparent"
	case driver.ExtTraceState:
		return "ce-tracestate"
	case driver.ExtReplyTo:
		return "ce-replyto"
	}
	return cePrefix + name
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}

// encode maps m onto a NATS message for subject, in the content mode m.Mode
// asks for. The caller has checked m with driver.CheckEnvelope. stored
// copies what the NATS message would otherwise share with m: the jetstream
// client keeps an asynchronously published message and may send it again
// (after a no-responders answer) even once Publish gave up and returned,
// when the caller may be reusing m. A core NATS message is written to the
// connection's buffer before the publish returns, so it shares m's body and
// header values. msgID adds the JetStream de-duplication header (a message
// of an exactly-once publish, bound for a stream).
func encode(subject string, m *driver.Message, stored, msgID bool) *nats.Msg {
	if m.Mode == driver.Structured {
		return encodeStructured(subject, m, msgID)
	}
	w := new(wireMsg)
	w.encode(subject, m, stored, msgID)
	return &w.msg
}

// wirePool holds the wire messages of core NATS publishes, requests and
// replies, which the client copies into its write buffer before PublishMsg
// (or the request's publish) returns: one message and its header map serve
// publish after publish, so that the header map and its entries are not
// allocated per message.
var wirePool = sync.Pool{New: func() any { return new(wireMsg) }}

// sendCore encodes m for subject in a pooled wire message, hands it to
// send, which must not retain it (a core NATS publish, request or reply),
// and takes it back.
func sendCore[T any](subject string, m *driver.Message, send func(*nats.Msg) (T, error)) (T, error) {
	if m.Mode == driver.Structured {
		return send(encodeStructured(subject, m, false))
	}
	w := wirePool.Get().(*wireMsg)
	w.encode(subject, m, false, false)
	r, err := send(&w.msg)
	w.reset()
	wirePool.Put(w)
	return r, err
}

// reset drops what w refers to, keeping its header map (emptied) for the
// next message.
func (w *wireMsg) reset() {
	h := w.msg.Header
	clear(h)
	w.msg = nats.Msg{Header: h}
	clear(w.vals[:])
}

// encode fills w with m for subject in binary content mode (see encode),
// reusing w's header map when it has one.
func (w *wireMsg) encode(subject string, m *driver.Message, stored, msgID bool) {
	_, n := headerCount(m, msgID)
	h := w.msg.Header
	if h == nil {
		h = make(nats.Header, n+len(m.Header))
	}
	for k, vs := range m.Header {
		if stored {
			vs = slices.Clone(vs)
		}
		h[k] = vs
	}
	// One backing array for the single values of the attributes, rather than
	// one allocation per header, allocated with the message when it fits.
	e := headerWriter{h: h, vals: w.vals[:0]}
	if n > len(w.vals) {
		e.vals = make([]string, 0, n)
	}
	if m.Key != "" {
		e.set(partitionKey, percentEncode(m.Key))
	}
	// The attributes of Message's own fields, in EachAttribute's order,
	// without its callback (which would allocate a closure per message);
	// then the extensions, which never replace a header already written
	// (CheckEnvelope refuses such names; this holds even without it).
	e.set("ce-specversion", driver.SpecVersion)
	e.opt("ce-id", m.ID)
	e.opt("ce-source", m.Source)
	e.opt("ce-type", m.Type)
	e.opt("ce-subject", m.Subject)
	if !m.Time.IsZero() {
		// Formatted into the message's own buffer: no string allocated.
		b := m.Time.UTC().AppendFormat(w.time[:0], time.RFC3339Nano)
		e.set("ce-time", unsafe.String(unsafe.SliceData(b), len(b)))
	}
	e.opt("ce-datacontenttype", m.DataContentType)
	e.opt("ce-dataschema", m.DataSchema)
	e.opt("ce-correlationid", m.CorrelationID)
	e.opt("ce-causationid", m.CausationID)
	e.opt("ce-traceparent", m.TraceParent)
	e.opt("ce-tracestate", m.TraceState)
	e.opt("ce-replyto", m.ReplyTo)
	for k, v := range m.Extensions {
		hdr := ceHeader(k)
		if _, taken := h[hdr]; !taken {
			e.set(hdr, percentEncode(v))
		}
	}
	if msgID && m.ID != "" {
		e.set(msgIDHeader, dedupID(m.Source, m.ID, subject, m.DedupParts()))
	}
	data := m.Data
	if stored {
		data = slices.Clone(data)
	}
	w.msg = nats.Msg{Subject: subject, Header: h, Data: data}
}

// headerWriter sets single-valued headers whose values share one backing
// array.
type headerWriter struct {
	h    nats.Header
	vals []string
}

func (e *headerWriter) set(name, value string) {
	e.vals = append(e.vals, value)
	e.h[name] = e.vals[len(e.vals)-1 : len(e.vals) : len(e.vals)]
}

// opt sets an attribute's header when the attribute is set.
func (e *headerWriter) opt(name, value string) {
	if value != "" {
		e.set(name, percentEncode(value))
	}
}

// dedupID is the Nats-Msg-Id of a stored message: a digest of (source, id,
// subject) and [driver.Message.DedupParts], so that the server's
// de-duplication, which keys on this header alone within a whole stream,
// treats the same id from two sources or to two destinations as two
// messages, two groups' dead letters of one message as two, and a replay as
// a new publish. 128 bits of SHA-256, in hex:
// fixed length whatever the attributes' length, and no accidental
// collisions. The NUL separators cannot occur in the parts (CheckEnvelope
// refuses control characters, and subjects have none).
func dedupID(source, id, subject, extra string) string {
	var buf [192]byte
	b := append(buf[:0], source...)
	b = append(b, 0)
	b = append(b, id...)
	b = append(b, 0)
	b = append(b, subject...)
	if extra != "" {
		b = append(b, 0)
		b = append(b, extra...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// wireMsg is a NATS message and room for the header values of the
// attributes a message usually carries, and for its time. The time's
// header value points into time, which lives as long as the message and
// is never written again.
type wireMsg struct {
	msg  nats.Msg
	vals [12]string
	time [len("2006-01-02T15:04:05.999999999+00:00")]byte
}

// headerCount returns the number of attributes of Message's own fields that
// EachAttribute yields for m, and the number of CloudEvents and
// de-duplication headers that encode writes, so that the header map is
// allocated once at its size.
func headerCount(m *driver.Message, withMsgID bool) (fixed, total int) {
	fixed = 1 // specversion
	for _, v := range [...]string{m.ID, m.Source, m.Type, m.Subject, m.DataContentType, m.DataSchema,
		m.CorrelationID, m.CausationID, m.TraceParent, m.TraceState, m.ReplyTo} {
		if v != "" {
			fixed++
		}
	}
	if !m.Time.IsZero() {
		fixed++
	}
	total = fixed + len(m.Extensions)
	if m.Key != "" {
		total++
	}
	if withMsgID && m.ID != "" {
		total++
	}
	return fixed, total
}

// decode reads a received NATS message as an envelope. It always returns a
// message, holding whatever could be read and the raw body; the error, a
// *driver.MalformedError, says why the message is not a valid envelope.
func decode(h nats.Header, data []byte) (*driver.Message, error) {
	m := new(driver.Message)
	return m, decodeInto(m, h, data)
}

// decodeInto is decode into a zero message that the caller allocated, so
// that a batch of deliveries can share one allocation.
func decodeInto(m *driver.Message, h nats.Header, data []byte) error {
	m.Data = data
	var bad error
	fail := func(err error) {
		if bad == nil {
			bad = err
		}
	}
	sawSpecVersion := false
	var fallbackContentType string
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		if len(k) > len(cePrefix) && strings.EqualFold(k[:len(cePrefix)], cePrefix) {
			name := strings.ToLower(k[len(cePrefix):])
			v, err := headerValue(vs[0])
			if err != nil {
				fail(&driver.MalformedError{Reason: "header " + quote(k), Err: err})
				continue
			}
			switch name {
			case driver.ExtPartitionKey:
				m.Key = v
			case "specversion":
				sawSpecVersion = true
				fallthrough
			default:
				if err := m.SetAttribute(name, v); err != nil {
					fail(err)
				}
			}
			continue
		}
		switch {
		case k == msgIDHeader:
			continue
		case strings.EqualFold(k, contentType):
			if driver.IsStructured(vs[0]) {
				// Structured content mode, whatever else the headers say:
				// what was read so far is replaced.
				sm, err := decodeStructured(h, k, data)
				*m = *sm
				return err
			}
			// Some CloudEvents SDKs carry datacontenttype in Content-Type, as
			// the HTTP binding does; read it when ce-datacontenttype is absent.
			fallbackContentType = vs[0]
			continue
		}
		if m.Header == nil {
			m.Header = make(map[string][]string, len(h))
		}
		m.Header[k] = vs
	}
	if m.DataContentType == "" && fallbackContentType != "" {
		m.DataContentType = fallbackContentType
	}
	if bad != nil {
		return bad
	}
	if !sawSpecVersion {
		// No Content-Type either: some senders (the CloudEvents Go SDK's
		// NATS bindings among them) send the JSON event format with no
		// header at all.
		if driver.LooksLikeJSONObject(data) {
			if sm, err := decodeStructured(h, "", data); err == nil {
				*m = *sm
				return nil
			}
		}
		return &driver.MalformedError{Reason: "missing specversion attribute (no ce-specversion header)"}
	}
	return m.Validate()
}

// needsEscape reports whether the binding requires c to be percent-encoded:
// space, double quote, percent, and anything outside printable ASCII.
func needsEscape(c byte) bool { return c <= ' ' || c == '"' || c == '%' || c >= 0x7f }

func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

type valueError string

func (e valueError) Error() string { return string(e) }

// headerValue decodes a header value: first the quoted-string form older
// senders may use, then one round of percent-decoding. A percent sign that
// does not start a valid escape is kept as it is, since senders that do not
// percent-encode exist; a result that is not valid UTF-8 is refused, as the
// binding requires.
func headerValue(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	if strings.IndexByte(v, '%') >= 0 {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			if v[i] == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
				b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
				i += 2
				continue
			}
			b = append(b, v[i])
		}
		v = string(b)
	}
	if !utf8.ValidString(v) {
		return "", valueError("value is not valid UTF-8 after percent-decoding")
	}
	return v, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
