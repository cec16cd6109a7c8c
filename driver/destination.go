package driver

import "strings"

// Pattern is the messaging pattern a destination belongs to. Drivers use it to
// choose a broker primitive (a JetStream stream or a core NATS subject, an SNS
// topic or an SQS queue, a fanout or a direct exchange...).
type Pattern int

// The patterns. Reply and DeadLetter are internal destinations of the bus.
const (
	Event      Pattern = iota + 1 // events.<type>: every group once, members compete
	Command                       // commands.<service>.<type>: one instance of the service
	Query                         // queries.<service>.<type>: one responder, a reply
	Stream                        // streams.<name>: ordered per key, consumed in batches
	Broadcast                     // broadcast.<type>: every instance, not persisted
	Reply                         // replies.<instance>: replies to one bus instance
	DeadLetter                    // deadletter.<origin destination>: dead-lettered messages
)

var patternNames = [...]string{"", "event", "command", "query", "stream", "broadcast", "reply", "deadletter"}
var patternPrefixes = [...]string{"", "events", "commands", "queries", "streams", "broadcast", "replies", "deadletter"}

func (p Pattern) String() string {
	if p <= 0 || int(p) >= len(patternNames) {
		return "pattern(" + itoa(int(p)) + ")"
	}
	return patternNames[p]
}

// Prefix is the first token of the pattern's logical destination names.
func (p Pattern) Prefix() string {
	if p <= 0 || int(p) >= len(patternPrefixes) {
		return ""
	}
	return patternPrefixes[p]
}

// Patterns lists the user-facing patterns, in order.
func Patterns() []Pattern { return []Pattern{Event, Command, Query, Stream, Broadcast} }

// Destination is a logical destination: the pattern and the dot-separated
// logical name, such as "events.order.created" or "commands.billing.charge".
// Each driver maps Name onto its broker's naming rules in one function.
type Destination struct {
	Pattern Pattern
	Name    string
}

func (d Destination) String() string { return d.Name }

// NewDestination builds the logical destination of pattern p from its parts,
// joined with dots after the pattern's prefix.
func NewDestination(p Pattern, parts ...string) Destination {
	n := len(p.Prefix())
	for _, s := range parts {
		n += 1 + len(s)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(p.Prefix())
	for _, s := range parts {
		b.WriteByte('.')
		b.WriteString(s)
	}
	return Destination{Pattern: p, Name: b.String()}
}

// DeadLetterOf is the dead-letter destination of d.
func DeadLetterOf(d Destination) Destination {
	return Destination{Pattern: DeadLetter, Name: DeadLetter.Prefix() + "." + d.Name}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	neg := i < 0
	if neg {
		i = -i
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	if neg {
		n--
		b[n] = '-'
	}
	return string(b[n:])
}
