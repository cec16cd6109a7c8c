package awsbus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/marty-msf/eventbus/driver"
)

// Message attributes on the wire. See the package documentation, "Message
// attributes".
const (
	// maxAttributes is SQS's limit of message attributes per message (SNS
	// passes at most as many to a queue with raw delivery).
	maxAttributes = 10
	// cePrefix starts the attribute of each CloudEvents attribute in binary
	// mode: ce-id, ce-source, ce-type...
	cePrefix = "ce-"
	// metaAttribute carries, as one JSON object, what has no attribute of
	// its own: the key, the headers, the CloudEvents attributes beyond the
	// limit, and how the body is encoded.
	metaAttribute = "eventbus"
	// contentTypeAttribute marks a structured-mode body.
	contentTypeAttribute = "content-type"
	structuredType       = "application/cloudevents+json; charset=utf-8"
	stringType           = "String"
	// maxWireSize is SQS's and SNS's limit of one message: body plus
	// attribute names, types and values.
	maxWireSize = 256 << 10
	// MaxMessageSize is the largest Message.Size the driver accepts: data
	// that is not text travels as base64 (4 bytes for 3), which must still
	// fit maxWireSize with the attributes.
	MaxMessageSize = 190 << 10
)

// Body encodings recorded in meta.Enc.
const (
	encText   = ""       // the body is the data, which is text SQS carries
	encBase64 = "base64" // the body is the data in standard base64
	encEmpty  = "empty"  // no data; the body is a placeholder (SQS refuses empty bodies)
)

// emptyBody is the placeholder body of a message without data.
const emptyBody = "-"

// meta is the JSON value of the "eventbus" attribute.
type meta struct {
	Key    string              `json:"key,omitempty"`
	Header map[string][]string `json:"header,omitempty"`
	CE     map[string]string   `json:"ce,omitempty"`
	Enc    string              `json:"enc,omitempty"`
}

// attribute is one message attribute, independent of the SDK's SNS and SQS
// types (which differ).
type attribute struct{ name, value string }

// wireMessage is an envelope encoded for SNS or SQS.
type wireMessage struct {
	body  string
	attrs []attribute
}

// size counts what SQS counts against its limit.
func (w *wireMessage) size() int {
	n := len(w.body)
	for _, a := range w.attrs {
		n += len(a.name) + len(stringType) + len(a.value)
	}
	return n
}

// attributeRank orders the CloudEvents attributes for the attribute budget:
// the ones a reader needs most come first and get attributes of their own.
// The required ones lead; then subject and the extensions that are not the
// bus's own (rankExtension, by name), which are what subscriptions filter
// on, and which a filter policy sees only as attributes of their own (see
// select.go); then the rest.
var attributeRank = map[string]int{
	"specversion": 0, "id": 1, "source": 2, "type": 3, "subject": 4,
	"time": 6, "datacontenttype": 7, "dataschema": 8, driver.ExtTraceParent: 9, driver.ExtTraceState: 10,
	driver.ExtCorrelationID: 11, driver.ExtCausationID: 12, driver.ExtReplyTo: 13,
}

// rankExtension is the rank of every extension that attributeRank does not
// name.
const rankExtension = 5

// attributeOrder is name's rank for the attribute budget.
func attributeOrder(name string) int {
	if r, ok := attributeRank[name]; ok {
		return r
	}
	return rankExtension
}

// encode maps m onto a body and at most maxAttributes attributes.
func encode(m *driver.Message) (*wireMessage, error) {
	if m.Mode == driver.Structured {
		return encodeStructured(m)
	}
	var md meta
	md.Key = m.Key
	md.Header = m.Header
	w := &wireMessage{}
	switch {
	case len(m.Data) == 0:
		w.body, md.Enc = emptyBody, encEmpty
	case sqsText(m.Data):
		w.body = string(m.Data)
	default:
		w.body, md.Enc = base64.StdEncoding.EncodeToString(m.Data), encBase64
	}

	type nv struct{ name, value string }
	all := make([]nv, 0, 8+len(m.Extensions))
	m.EachAttribute(func(name, value string) { all = append(all, nv{name, value}) })
	slices.SortFunc(all, func(a, b nv) int {
		if r := attributeOrder(a.name) - attributeOrder(b.name); r != 0 {
			return r
		}
		return strings.Compare(a.name, b.name)
	})
	// SQS refuses an empty attribute value: such an extension rides in meta.
	own := 0
	for _, a := range all {
		if a.value != "" {
			own++
		}
	}
	needMeta := md.Key != "" || len(md.Header) > 0 || md.Enc != "" || own < len(all) || own > maxAttributes
	budget := maxAttributes
	if needMeta {
		budget--
	}
	w.attrs = make([]attribute, 0, min(len(all), budget)+1)
	for _, a := range all {
		if a.value != "" && len(w.attrs) < budget {
			w.attrs = append(w.attrs, attribute{cePrefix + a.name, a.value})
			continue
		}
		if md.CE == nil {
			md.CE = make(map[string]string)
		}
		md.CE[a.name] = a.value
	}
	if needMeta {
		v, err := marshal(md)
		if err != nil {
			return nil, err
		}
		w.attrs = append(w.attrs, attribute{metaAttribute, v})
	}
	return w, nil
}

// encodeStructured writes the CloudEvents JSON event format into the body;
// the key and headers, which are not CloudEvents attributes, stay in the meta
// attribute.
func encodeStructured(m *driver.Message) (*wireMessage, error) {
	ev := make(map[string]any, 12+len(m.Extensions))
	m.EachAttribute(func(name, value string) { ev[name] = value })
	switch {
	case len(m.Data) == 0:
	case jsonContentType(m.DataContentType) && compactJSON(m.Data):
		ev["data"] = json.RawMessage(m.Data)
	default:
		ev["data_base64"] = base64.StdEncoding.EncodeToString(m.Data)
	}
	body, err := marshal(ev)
	if err != nil {
		return nil, err
	}
	w := &wireMessage{body: body, attrs: []attribute{{contentTypeAttribute, structuredType}}}
	if m.Key != "" || len(m.Header) > 0 {
		v, err := marshal(meta{Key: m.Key, Header: m.Header})
		if err != nil {
			return nil, err
		}
		w.attrs = append(w.attrs, attribute{metaAttribute, v})
	}
	return w, nil
}

// marshal encodes v as JSON without HTML escaping, so that '<', '>' and '&'
// in values do not grow sixfold.
func marshal(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// decode reads a received body and its attributes in either content mode.
// A message that is not an envelope comes back with the body as Data and a
// *driver.MalformedError.
func decode(body string, attrs map[string]string) (*driver.Message, error) {
	m := &driver.Message{}
	var md meta
	if v, ok := attrs[metaAttribute]; ok {
		if err := json.Unmarshal([]byte(v), &md); err != nil {
			m.Data = []byte(body)
			return m, &driver.MalformedError{Reason: "attribute " + metaAttribute + " is not its JSON object", Err: err}
		}
	}
	structured := strings.HasPrefix(attrs[contentTypeAttribute], "application/cloudevents+json")
	if _, binary := attrs[cePrefix+"specversion"]; !binary && !structured {
		// Someone else's structured event without a content type.
		structured = looksStructured(body)
	}
	var err error
	if structured {
		err = decodeStructured(m, body)
		m.Mode = driver.Structured
	} else {
		err = decodeBinary(m, body, attrs, md)
	}
	if err == nil {
		err = m.Validate()
	}
	m.Key = md.Key
	if len(md.Header) > 0 {
		if m.Header == nil {
			m.Header = make(map[string][]string, len(md.Header))
		}
		for k, vs := range md.Header {
			m.Header[k] = append(m.Header[k], vs...)
		}
	}
	if err != nil && m.Data == nil {
		m.Data = []byte(body)
	}
	return m, err
}

func decodeBinary(m *driver.Message, body string, attrs map[string]string, md meta) error {
	var firstErr error
	set := func(name, value string) {
		if err := m.SetAttribute(name, value); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for name, value := range attrs {
		switch {
		case strings.HasPrefix(name, cePrefix):
			set(name[len(cePrefix):], value)
		case name == metaAttribute:
		default:
			// Attributes of other senders become headers.
			if m.Header == nil {
				m.Header = make(map[string][]string, 2)
			}
			m.Header[name] = append(m.Header[name], value)
		}
	}
	for name, value := range md.CE {
		set(name, value)
	}
	switch md.Enc {
	case encText:
		m.Data = []byte(body)
	case encEmpty:
	case encBase64:
		data, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			m.Data = []byte(body)
			return &driver.MalformedError{Reason: "body is not base64", Err: err}
		}
		m.Data = data
	default:
		m.Data = []byte(body)
		return &driver.MalformedError{Reason: "unknown body encoding " + md.Enc}
	}
	return firstErr
}

func looksStructured(body string) bool {
	b := strings.TrimSpace(body)
	return strings.HasPrefix(b, "{") && strings.Contains(b, `"specversion"`)
}

func decodeStructured(m *driver.Message, body string) error {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		m.Data = []byte(body)
		return &driver.MalformedError{Reason: "structured body is not a JSON object", Err: err}
	}
	for name, raw := range ev {
		switch name {
		case "data":
			var s string
			if len(raw) > 0 && raw[0] == '"' && !jsonContentType(stringField(ev, "datacontenttype")) {
				// A JSON string as data of a non-JSON type is the text itself.
				if err := json.Unmarshal(raw, &s); err == nil {
					m.Data = []byte(s)
					continue
				}
			}
			m.Data = slices.Clone(raw)
		case "data_base64":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return &driver.MalformedError{Reason: "data_base64 is not a string", Err: err}
			}
			data, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return &driver.MalformedError{Reason: "data_base64 is not base64", Err: err}
			}
			m.Data = data
		default:
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				// CloudEvents allows non-string extension values (numbers,
				// booleans); they keep their JSON text.
				s = string(raw)
			}
			if err := m.SetAttribute(name, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// compactJSON reports whether b is valid JSON that the encoder writes back
// byte for byte (it compacts raw values, and would drop white space).
func compactJSON(b []byte) bool {
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b) && !bytes.ContainsAny(b, "<>&\u2028\u2029")
}

func stringField(ev map[string]json.RawMessage, name string) string {
	var s string
	_ = json.Unmarshal(ev[name], &s)
	return s
}

// jsonContentType reports whether ct names JSON: application/json,
// text/json, or a +json suffix, parameters allowed. Empty means JSON too, as
// the CloudEvents JSON format says.
func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

// sqsText reports whether SQS carries b unchanged as a message body: UTF-8
// of the characters XML 1.0 allows (tab, LF, CR, U+0020–U+D7FF,
// U+E000–U+FFFD, U+10000–U+10FFFF). CR is excluded too, since XML readers
// turn CR LF into LF.
func sqsText(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			return false
		case r == '\t' || r == '\n':
		case r < 0x20, r == '\r', r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			return false
		}
		b = b[n:]
	}
	return true
}
