package redisbus

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// Stream entry fields. There is no official CloudEvents binding for Redis;
// the driver follows the Kafka binding's binary content mode, whose names are
// valid Redis field names and read well in redis-cli: every attribute and
// extension is a field "ce_" + its name, datacontenttype is "content-type",
// the key is the partitionkey extension, a free header is "hdr:" + its name
// (several values joined by newlines, which header values cannot contain),
// and the data is the field "data", last.
const (
	cePrefix         = "ce_"
	fieldContentType = "content-type"
	fieldData        = "data"
	headerPrefix     = "hdr:"
	fieldKey         = cePrefix + driver.ExtPartitionKey

	structuredContentType = "application/cloudevents+json"
)

// fieldNames are the field names of the attributes every message may
// carry, addressable so that a command's arguments point at them (a *string
// argument) instead of holding a copy in an interface, which allocates.
var fieldNames = [...]string{
	"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "ce_dataschema",
	"ce_" + driver.ExtCorrelationID, "ce_" + driver.ExtCausationID, "ce_" + driver.ExtTraceParent,
	"ce_" + driver.ExtTraceState, "ce_" + driver.ExtReplyTo, fieldContentType, fieldKey,
}

// fieldIndex returns the index in fieldNames of the field of CloudEvents
// attribute name, or -1.
func fieldIndex(name string) int {
	switch name {
	case "specversion":
		return 0
	case "id":
		return 1
	case "source":
		return 2
	case "type":
		return 3
	case "subject":
		return 4
	case "time":
		return 5
	case "dataschema":
		return 6
	case driver.ExtCorrelationID:
		return 7
	case driver.ExtCausationID:
		return 8
	case driver.ExtTraceParent:
		return 9
	case driver.ExtTraceState:
		return 10
	case driver.ExtReplyTo:
		return 11
	case "datacontenttype":
		return 12
	}
	return -1
}

// ceField returns the field name of a CloudEvents attribute without
// allocating for the attributes every message carries.
func ceField(name string) string {
	if i := fieldIndex(name); i >= 0 {
		return fieldNames[i]
	}
	return cePrefix + name
}

// argBuilder builds the arguments of a batch's commands with few
// allocations: strings are referenced by pointer (go-redis writes a *string
// argument as the string), from fieldNames or from vals, which holds the
// batch's values; times are *time.Time, which go-redis formats (RFC 3339)
// into its own buffer, and data a *dataArg. A pointer into vals, times or
// data stays valid when append moves them.
type argBuilder struct {
	args  []any
	vals  []string
	times []time.Time
	data  []dataArg
}

// dataArg is a message's data as a command argument: a pointer to it is an
// encoding.BinaryMarshaler, which go-redis writes without a copy, where a
// []byte in an interface would be an allocation of its own.
type dataArg []byte

// MarshalBinary returns the data.
func (d *dataArg) MarshalBinary() ([]byte, error) { return *d, nil }

// specVersion is addressable, for a *string argument.
var specVersion = driver.SpecVersion

func (b *argBuilder) str(v string) {
	b.vals = append(b.vals, v)
	b.args = append(b.args, &b.vals[len(b.vals)-1])
}

// field appends the name and value of one field.
func (b *argBuilder) field(i int, name, value string) {
	if i >= 0 {
		b.args = append(b.args, &fieldNames[i])
	} else {
		b.str(name)
	}
	b.str(value)
}

// known appends the field fieldNames[i] unless value is empty.
func (b *argBuilder) known(i int, value string) {
	if value != "" {
		b.field(i, "", value)
	}
}

// appendEntry appends m's stream entry fields, as appendFields does: the
// attributes in the order of Message.EachAttribute.
func (b *argBuilder) appendEntry(m *driver.Message) {
	if m.Mode == driver.Structured {
		b.field(fieldIndex("datacontenttype"), fieldContentType, structuredContentType)
		b.appendHeaders(m)
		b.args = append(b.args, fieldData, driver.EncodeStructured(m))
		return
	}
	b.args = append(b.args, &fieldNames[0], &specVersion)
	b.known(1, m.ID)
	b.known(2, m.Source)
	b.known(3, m.Type)
	b.known(4, m.Subject)
	if !m.Time.IsZero() {
		b.times = append(b.times, m.Time.UTC())
		b.args = append(b.args, &fieldNames[5], &b.times[len(b.times)-1])
	}
	b.known(12, m.DataContentType)
	b.known(6, m.DataSchema)
	b.known(7, m.CorrelationID)
	b.known(8, m.CausationID)
	b.known(9, m.TraceParent)
	b.known(10, m.TraceState)
	b.known(11, m.ReplyTo)
	for name, value := range m.Extensions {
		i := fieldIndex(name)
		if i < 0 {
			name = cePrefix + name
		}
		b.field(i, name, value)
	}
	if m.Key != "" {
		b.field(len(fieldNames)-1, fieldKey, m.Key)
	}
	b.appendHeaders(m)
	b.data = append(b.data, m.Data)
	b.args = append(b.args, fieldData, &b.data[len(b.data)-1])
}

func (b *argBuilder) appendHeaders(m *driver.Message) {
	if len(m.Header) == 0 {
		return
	}
	names := make([]string, 0, len(m.Header))
	for k := range m.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.field(-1, headerPrefix+k, strings.Join(m.Header[k], "\n"))
	}
}

// appendFields appends m's stream entry fields, name and value in turn, to
// args: binary content mode unless m.Mode asks for structured mode.
func appendFields(args []any, m *driver.Message) []any {
	if m.Mode == driver.Structured {
		args = append(args, fieldContentType, structuredContentType)
		args = appendHeaders(args, m)
		return append(args, fieldData, driver.EncodeStructured(m))
	}
	m.EachAttribute(func(name, value string) {
		if name == "datacontenttype" {
			args = append(args, fieldContentType, value)
			return
		}
		args = append(args, ceField(name), value)
	})
	if m.Key != "" {
		args = append(args, fieldKey, m.Key)
	}
	args = appendHeaders(args, m)
	return append(args, fieldData, m.Data)
}

func appendHeaders(args []any, m *driver.Message) []any {
	if len(m.Header) == 0 {
		return args
	}
	names := make([]string, 0, len(m.Header))
	for k := range m.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, headerPrefix+k, strings.Join(m.Header[k], "\n"))
	}
	return args
}

// entry is one stream entry as read from Redis: its id and its fields in
// order. The data field is either among the fields or, read from a raw
// reply, in data (hasData).
type entry struct {
	id      string
	fields  []string // name, value, name, value...
	data    []byte
	hasData bool
}

// decode reads an entry's fields as an envelope. A structured-mode event
// (content-type application/cloudevents+json) is read from the data field;
// a field the driver does not know becomes a free header of that name. When
// the entry is not a valid event it returns what it could read, Data set to
// the raw data field, and a *driver.MalformedError.
func decode(fields []string) (*driver.Message, error) {
	return decodeInto(&driver.Message{}, entry{fields: fields})
}

// decodeInto is decode of e into m, which it returns, except for a
// structured-mode event, which is a message of its own.
func decodeInto(m *driver.Message, e entry) (*driver.Message, error) {
	var (
		fields      = e.fields
		data        = e.data
		contentType string
		spec        bool
		firstErr    error
	)
	for i := 0; i+1 < len(fields); i += 2 {
		name, value := fields[i], fields[i+1]
		switch {
		case name == fieldData:
			data = []byte(value)
		case name == fieldContentType:
			contentType = value
		case name == fieldKey:
			m.Key = value
		case strings.HasPrefix(name, cePrefix):
			attr := name[len(cePrefix):]
			if attr == "specversion" {
				spec = true
			}
			if err := m.SetAttribute(attr, value); err != nil && firstErr == nil {
				firstErr = err
			}
		default:
			header := strings.TrimPrefix(name, headerPrefix)
			if m.Header == nil {
				m.Header = make(map[string][]string, 2)
			}
			m.Header[header] = strings.Split(value, "\n")
		}
	}
	if driver.IsStructured(contentType) && !spec {
		s, err := driver.DecodeStructured(data)
		s.Header = m.Header
		return s, err
	}
	if contentType != "" {
		m.DataContentType = contentType
	}
	m.Data = data
	switch {
	case firstErr != nil:
		return m, firstErr
	case !spec:
		return m, &driver.MalformedError{Reason: "missing ce_specversion field (and not a structured-mode event)"}
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

// broadcastPayload is a Pub/Sub message: the fields a stream entry would
// have, as one JSON document (Pub/Sub carries one string per message).
type broadcastPayload struct {
	Fields []string `json:"fields"`
	Data   []byte   `json:"data,omitempty"`
}

// encodeBroadcast returns m as a Pub/Sub payload.
func encodeBroadcast(m *driver.Message) ([]byte, error) {
	args := appendFields(make([]any, 0, 32), m)
	p := broadcastPayload{Fields: make([]string, 0, len(args))}
	for i := 0; i+1 < len(args); i += 2 {
		name := args[i].(string)
		if name == fieldData {
			switch v := args[i+1].(type) {
			case []byte:
				p.Data = v
			case string:
				p.Data = []byte(v)
			}
			continue
		}
		p.Fields = append(p.Fields, name, args[i+1].(string))
	}
	return json.Marshal(p)
}

// decodeBroadcast reads a Pub/Sub payload.
func decodeBroadcast(payload string) (*driver.Message, error) {
	var p broadcastPayload
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return &driver.Message{Data: []byte(payload)}, &driver.MalformedError{Reason: "broadcast payload is not an eventbus envelope", Err: err}
	}
	return decode(append(p.Fields, fieldData, string(p.Data)))
}
