package driver

import (
	"maps"
	"slices"
	"time"
)

// SpecVersion is the CloudEvents specification version of every envelope.
const SpecVersion = "1.0"

// Message is the one envelope of every pattern: a CloudEvents 1.0 event plus a
// partition key and free transport headers. Drivers map it onto their broker in
// CloudEvents binary content mode (attributes as headers, Data as the body).
//
// The zero value is not publishable: the bus fills ID, Source, Time and
// SpecVersion-derived defaults before a message reaches a driver.
type Message struct {
	// CloudEvents context attributes.
	ID              string
	Source          string
	Type            string
	Subject         string
	Time            time.Time
	DataContentType string
	DataSchema      string

	// Extensions that the bus always carries (empty ones are omitted on the
	// wire). Their CloudEvents names are the Ext* constants.
	CorrelationID string
	CausationID   string
	TraceParent   string
	TraceState    string
	// ReplyTo is the destination name a reply goes to (request/response over
	// the bus's generic fallback).
	ReplyTo string

	// Extensions holds any other CloudEvents extension attributes, by their
	// lower-case CloudEvents name.
	Extensions map[string]string

	// Key orders and partitions: messages with the same Key are delivered in
	// publish order by drivers that claim OrderingByKey.
	Key string

	// Header holds free transport headers, multi-valued. Names are case
	// sensitive and must not start with a CloudEvents prefix.
	Header map[string][]string

	// Data is the payload, encoded as DataContentType says.
	Data []byte

	// Mode is the CloudEvents content mode the message is sent in. The zero
	// value is binary mode; Structured asks for the JSON event format in the
	// body, for consumers that read only that. Drivers read both modes on
	// receive whatever this says, and set it on received messages to the mode
	// they arrived in.
	Mode ContentMode
}

// ContentMode is a CloudEvents content mode.
type ContentMode uint8

const (
	// Binary carries attributes as transport headers and Data as the body.
	Binary ContentMode = iota
	// Structured carries the whole event as one JSON object in the body
	// (content type application/cloudevents+json).
	Structured
)

// CloudEvents names of the extensions carried in Message fields, and of the
// attributes the bus adds when it dead-letters a message.
const (
	ExtCorrelationID = "correlationid"
	ExtCausationID   = "causationid"
	ExtTraceParent   = "traceparent"
	ExtTraceState    = "tracestate"
	ExtReplyTo       = "replyto"
	ExtPartitionKey  = "partitionkey"

	ExtDeadLetterReason   = "deadletterreason"
	ExtDeadLetterAttempts = "deadletterattempts"
	ExtDeadLetterOrigin   = "deadletterorigin"
	// ExtDeadLetterGroup is the consumer group that gave the message up
	// (absent for a private subscription).
	ExtDeadLetterGroup = "deadlettergroup"
	// ExtDeadLetterTime is when the message was dead-lettered, RFC 3339 in
	// UTC with nanoseconds.
	ExtDeadLetterTime = "deadlettertime"
	// ExtReplayed marks a message the bus published again from a dead
	// letter: the time of the replay, RFC 3339 in UTC with nanoseconds. A
	// broker's de-duplication counts it (see the Driver contract), so a
	// replay is not dropped as a repeat of the original publish.
	ExtReplayed = "replayed"
	// ExtError carries a responder's error message on a reply.
	ExtError = "error"
	// ExtErrorCode carries a responder's error code on a reply.
	ExtErrorCode = "errorcode"
)

// DedupParts returns what a de-duplicating driver adds to (source, id,
// destination) to key m, as the Driver contract asks: the replay time of a
// dead letter's replay, and the group and time of a dead letter, so that
// neither a replay nor the dead letters of one message given up by several
// groups count as repeats. Empty for any other message.
func (m *Message) DedupParts() string {
	r, g, t := m.Extensions[ExtReplayed], m.Extensions[ExtDeadLetterGroup], m.Extensions[ExtDeadLetterTime]
	if r == "" && g == "" && t == "" {
		return ""
	}
	return r + "\x00" + g + "\x00" + t
}

// Size is the number of bytes the message occupies, counted the same way for
// every driver: the data plus every attribute, extension and header name and
// value. Capabilities.MaxMessageSize is compared against it.
func (m *Message) Size() int {
	n := len(m.Data) + len(m.ID) + len(m.Source) + len(m.Type) + len(m.Subject) +
		len(m.DataContentType) + len(m.DataSchema) + len(m.CorrelationID) +
		len(m.CausationID) + len(m.TraceParent) + len(m.TraceState) + len(m.ReplyTo) + len(m.Key)
	if !m.Time.IsZero() {
		n += len(time.RFC3339Nano)
	}
	for k, v := range m.Extensions {
		n += len(k) + len(v)
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// Clone returns a deep copy of m.
func (m *Message) Clone() *Message {
	c := *m
	if m.Extensions != nil {
		c.Extensions = maps.Clone(m.Extensions)
	}
	if m.Header != nil {
		c.Header = make(map[string][]string, len(m.Header))
		for k, vs := range m.Header {
			c.Header[k] = slices.Clone(vs)
		}
	}
	if m.Data != nil {
		c.Data = slices.Clone(m.Data)
	}
	return &c
}

// Attributes returns every CloudEvents attribute and extension of m that is
// set, by CloudEvents name, except data. Drivers use it (and [FromAttributes])
// to map an envelope onto headers.
func (m *Message) Attributes() map[string]string {
	a := make(map[string]string, 8+len(m.Extensions))
	m.EachAttribute(func(name, value string) { a[name] = value })
	return a
}

// EachAttribute calls fn for every set CloudEvents attribute and extension of
// m, specversion first, without allocating a map.
func (m *Message) EachAttribute(fn func(name, value string)) {
	fn("specversion", SpecVersion)
	set := func(name, v string) {
		if v != "" {
			fn(name, v)
		}
	}
	set("id", m.ID)
	set("source", m.Source)
	set("type", m.Type)
	set("subject", m.Subject)
	if !m.Time.IsZero() {
		fn("time", m.Time.UTC().Format(time.RFC3339Nano))
	}
	set("datacontenttype", m.DataContentType)
	set("dataschema", m.DataSchema)
	set(ExtCorrelationID, m.CorrelationID)
	set(ExtCausationID, m.CausationID)
	set(ExtTraceParent, m.TraceParent)
	set(ExtTraceState, m.TraceState)
	set(ExtReplyTo, m.ReplyTo)
	for k, v := range m.Extensions {
		fn(k, v)
	}
}

// SetAttribute sets one CloudEvents attribute or extension by its CloudEvents
// name, the inverse of EachAttribute. Unknown names become Extensions. It
// returns an error only for a malformed time or an unsupported specversion.
func (m *Message) SetAttribute(name, value string) error {
	switch name {
	case "specversion":
		if value != SpecVersion {
			return &MalformedError{Reason: "unsupported specversion " + quote(value)}
		}
	case "id":
		m.ID = value
	case "source":
		m.Source = value
	case "type":
		m.Type = value
	case "subject":
		m.Subject = value
	case "time":
		t, err := time.Parse(time.RFC3339Nano, value)
		if err != nil {
			return &MalformedError{Reason: "time attribute " + quote(value) + " is not RFC 3339", Err: err}
		}
		m.Time = t
	case "datacontenttype":
		m.DataContentType = value
	case "dataschema":
		m.DataSchema = value
	case ExtCorrelationID:
		m.CorrelationID = value
	case ExtCausationID:
		m.CausationID = value
	case ExtTraceParent:
		m.TraceParent = value
	case ExtTraceState:
		m.TraceState = value
	case ExtReplyTo:
		m.ReplyTo = value
	default:
		if m.Extensions == nil {
			m.Extensions = make(map[string]string, 2)
		}
		m.Extensions[name] = value
	}
	return nil
}

// Validate reports whether a received envelope carries the attributes the
// CloudEvents specification requires (id, source, type).
func (m *Message) Validate() error {
	switch {
	case m.ID == "":
		return &MalformedError{Reason: "missing id attribute"}
	case m.Source == "":
		return &MalformedError{Reason: "missing source attribute"}
	case m.Type == "":
		return &MalformedError{Reason: "missing type attribute"}
	}
	return nil
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}
