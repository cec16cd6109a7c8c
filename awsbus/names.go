package awsbus

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// SQS queue names hold at most 80 characters, SNS topic names 256; both allow
// letters, digits, '-' and '_', and a FIFO name ends in ".fifo".
const (
	maxQueueName = 80
	fifoSuffix   = ".fifo"
	hashLen      = 16 // hex digits: 64 bits of SHA-256
)

// DestinationError reports a logical destination that cannot be mapped onto
// SNS and SQS names.
type DestinationError struct {
	Name   string
	Reason string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("invalid destination %q: %s", e.Name, e.Reason)
}

// checkDestination refuses names the bus never produces: empty, outside the
// destination's pattern, or with characters no SNS/SQS name could carry
// readably.
func checkDestination(dest driver.Destination) error {
	prefix := dest.Pattern.Prefix()
	switch {
	case prefix == "":
		return &DestinationError{Name: dest.Name, Reason: "unknown pattern " + dest.Pattern.String()}
	case !strings.HasPrefix(dest.Name, prefix+".") || len(dest.Name) == len(prefix)+1:
		return &DestinationError{Name: dest.Name, Reason: fmt.Sprintf("a %s destination starts with %q followed by a name", dest.Pattern, prefix+".")}
	}
	for i := 0; i < len(dest.Name); i++ {
		if c := dest.Name[i]; c <= ' ' || c >= 0x7f {
			return &DestinationError{Name: dest.Name, Reason: "white space, control or non-ASCII character"}
		}
	}
	return nil
}

// resourceName maps a logical destination (and, for a group's queue, the
// group; for a private queue, the instance) onto an SNS topic or SQS queue
// name: prefix, a readable part, and 64 bits of a SHA-256 of the exact
// parts, so that names that read alike ("a.b" and "a_b") never share a
// resource. The readable part is cut so that the name fits SQS's 80
// characters, ".fifo" included; it replaces every character SNS and SQS do
// not allow (the dots of logical names) with '_'.
//
// kind separates the resources of one destination: "t" topic, "q" queue of
// a queue-based pattern, "g" a group's queue, "p" a private queue.
func resourceName(prefix, kind string, fifo bool, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	sum := hex.EncodeToString(h.Sum(nil))[:hashLen]

	room := maxQueueName - len(prefix) - len(kind) - hashLen - 3 // three '-'
	if fifo {
		room -= len(fifoSuffix)
	}
	var b strings.Builder
	b.Grow(maxQueueName)
	b.WriteString(prefix)
	b.WriteByte('-')
	b.WriteString(kind)
	b.WriteByte('-')
	readable := 0
	for i, p := range parts {
		if i > 0 && readable < room {
			b.WriteByte('-')
			readable++
		}
		for j := 0; j < len(p) && readable < room; j++ {
			c := p[j]
			if !nameChar(c) {
				c = '_'
			}
			b.WriteByte(c)
			readable++
		}
	}
	b.WriteByte('-')
	b.WriteString(sum)
	if fifo {
		b.WriteString(fifoSuffix)
	}
	return b.String()
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// topicPattern reports whether dest's pattern publishes to an SNS topic that
// fans out to one queue per group (events, streams, broadcasts, dead letters:
// a dead-letter topic also fans out to the queue that keeps its messages).
// The other patterns (commands, queries, replies) publish straight to one
// SQS queue that every subscriber of the destination consumes.
func topicPattern(p driver.Pattern) bool {
	return p == driver.Event || p == driver.Stream || p == driver.Broadcast || p == driver.DeadLetter
}

// isFIFO reports whether dest lives on FIFO topics and queues.
func (c *Config) isFIFO(dest driver.Destination) bool {
	switch dest.Pattern {
	case driver.Stream:
		return true
	case driver.Event, driver.Command, driver.Broadcast:
		return c.FIFO
	case driver.DeadLetter:
		// A redrive policy needs the dead-letter queue of the same kind as
		// its source queue.
		origin := strings.TrimPrefix(dest.Name, driver.DeadLetter.Prefix()+".")
		return strings.HasPrefix(origin, driver.Stream.Prefix()+".") ||
			c.FIFO && !strings.HasPrefix(origin, driver.Query.Prefix()+".") && !strings.HasPrefix(origin, driver.Reply.Prefix()+".")
	}
	return false
}

// TopicName is the SNS topic name of a topic-based destination.
func (c *Config) TopicName(dest driver.Destination) string {
	return resourceName(c.prefix(), "t", c.isFIFO(dest), dest.Name)
}

// QueueName is the SQS queue name that a subscription of group to dest
// consumes. For the queue-based patterns (commands, queries, replies) every
// group shares the destination's queue. The messages of a dead-letter
// destination are kept in a queue of their own besides its groups' (see
// Driver.DeadLetterQueueURL).
func (c *Config) QueueName(dest driver.Destination, group string) string {
	if !topicPattern(dest.Pattern) {
		return resourceName(c.prefix(), "q", c.isFIFO(dest), dest.Name)
	}
	return resourceName(c.prefix(), "g", c.isFIFO(dest), dest.Name, group)
}

// privateQueueName is the queue of a private (or broadcast) subscription,
// unique to one subscription of one driver instance.
func (c *Config) privateQueueName(dest driver.Destination, instance string) string {
	return resourceName(c.prefix(), "p", c.isFIFO(dest), dest.Name, instance)
}
