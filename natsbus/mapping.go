package natsbus

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// DestinationError reports a logical destination that cannot be mapped onto
// a NATS subject.
type DestinationError struct {
	Name   string
	Reason string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("invalid destination %q: %s", e.Name, e.Reason)
}

// Default stream names, after the configurable prefix (EVENTBUS_EVENTS...).
var streamSuffixes = map[driver.Pattern]string{
	driver.Event:      "EVENTS",
	driver.Command:    "COMMANDS",
	driver.Stream:     "STREAMS",
	driver.DeadLetter: "DEADLETTER",
}

// persistentPatterns are the patterns stored in a JetStream stream, in the
// order their streams are created.
var persistentPatterns = []driver.Pattern{driver.Event, driver.Command, driver.Stream, driver.DeadLetter}

// persistent reports whether p is stored in JetStream (when JetStream is on).
// Queries, broadcasts and replies always travel over core NATS.
func persistent(p driver.Pattern) bool {
	_, ok := streamSuffixes[p]
	return ok
}

// subjectOf maps a logical destination onto its NATS subject. The logical
// name already is a dot-separated subject; mapping only checks that every
// token is a literal NATS token of the destination's pattern, so that a name
// can never widen into a wildcard or escape its pattern's stream.
func subjectOf(dest driver.Destination) (string, error) {
	name := dest.Name
	prefix := dest.Pattern.Prefix()
	if prefix == "" {
		return "", &DestinationError{Name: name, Reason: "unknown pattern " + dest.Pattern.String()}
	}
	if !strings.HasPrefix(name, prefix+".") || len(name) == len(prefix)+1 {
		return "", &DestinationError{Name: name, Reason: fmt.Sprintf("a %s destination starts with %q followed by a name", dest.Pattern, prefix+".")}
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			switch {
			case c <= ' ' || c == 0x7f:
				return "", &DestinationError{Name: name, Reason: "whitespace or control character in a subject"}
			case c == '*' || c == '>':
				return "", &DestinationError{Name: name, Reason: "wildcard " + string(c) + " in a subject"}
			}
			continue
		}
		if i == start {
			return "", &DestinationError{Name: name, Reason: "empty subject token"}
		}
		start = i + 1
	}
	return name, nil
}

// streamName is the JetStream stream that stores pattern p.
func streamName(prefix string, p driver.Pattern) string {
	return prefix + "_" + streamSuffixes[p]
}

// consumerName derives the durable consumer name of a group on a destination:
// readable, free of the characters JetStream forbids in names (dots, spaces,
// wildcards, path separators), bounded in length, and made unique by a hash
// of the exact pair, so that two pairs never share a consumer even when their
// readable parts coincide.
func consumerName(group, destination string) string {
	const maxReadable = 96
	var b strings.Builder
	b.Grow(maxReadable + 10)
	write := func(s string) {
		for i := 0; i < len(s) && b.Len() < maxReadable; i++ {
			c := s[i]
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
				b.WriteByte(c)
			} else {
				b.WriteByte('_')
			}
		}
	}
	write(group)
	b.WriteString("__")
	write(destination)
	h := fnv.New32a()
	h.Write([]byte(group))
	h.Write([]byte{0})
	h.Write([]byte(destination))
	fmt.Fprintf(&b, "_%08x", h.Sum32())
	return b.String()
}
