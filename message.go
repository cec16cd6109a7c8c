package eventbus

import (
	"github.com/marty-msf/eventbus/driver"
)

// Message is the envelope of every pattern: a CloudEvents 1.0 event with a
// partition key and free headers. See driver.Message for its fields; it is the
// same type, so no copy is made between the bus and its drivers.
//
// Publishing fills an empty ID (unique), Source (Options.Source) and Time (now)
// of the message it is given. A message must not be modified while a publish
// that uses it is in progress; after that it may be reused.
type Message = driver.Message

// ContentMode is the CloudEvents content mode a message is sent in; set
// Message.Mode to Structured for consumers that read only structured mode.
type ContentMode = driver.ContentMode

// The content modes. Consumers read both, whatever they were sent in.
const (
	Binary     = driver.Binary
	Structured = driver.Structured
)

// Pattern is a messaging pattern; see the constants.
type Pattern = driver.Pattern

// The messaging patterns, for routes.
const (
	EventPattern     = driver.Event
	CommandPattern   = driver.Command
	QueryPattern     = driver.Query
	StreamPattern    = driver.Stream
	BroadcastPattern = driver.Broadcast
)

// NewMessage returns a message of type msgType whose data is v encoded with
// the JSON codec. Use Bus.NewMessage to encode with the bus's codec.
func NewMessage(msgType string, v any) (*Message, error) {
	m := &Message{Type: msgType}
	if v == nil {
		return m, nil
	}
	return m, defaultCodecs.encode(m, v)
}

var defaultCodecs = newCodecs(JSON, nil)
