package rabbitbus

import (
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// DestinationError reports a logical destination or group that cannot be
// mapped onto RabbitMQ names.
type DestinationError struct {
	Destination string
	Reason      string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("rabbitbus: destination %q: %s", e.Destination, e.Reason)
}

// exchangeKind is the exchange type of each pattern: events go through a
// topic exchange (so that programs of other languages can bind patterns such
// as events.order.*), everything else through direct exchanges.
func exchangeKind(p driver.Pattern) string {
	if p == driver.Event {
		return "topic"
	}
	return "direct"
}

// persistent reports whether messages of p are stored (delivery mode 2) and
// their group queues are durable.
func persistent(p driver.Pattern) bool {
	switch p {
	case driver.Event, driver.Command, driver.Stream, driver.DeadLetter:
		return true
	}
	return false
}

// exchangePatterns are the patterns with an exchange of their own.
var exchangePatterns = []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Stream, driver.Broadcast, driver.Reply, driver.DeadLetter}

// exchangeName is PREFIX.<pattern prefix>: eventbus.events, eventbus.commands...
func exchangeName(prefix string, p driver.Pattern) string { return prefix + "." + p.Prefix() }

// routingKey checks dest and returns its routing key: the logical name
// itself, which must belong to its pattern, fit in 255 bytes, and (on the
// topic exchange of events) hold no wildcard token.
func routingKey(dest driver.Destination) (string, error) {
	name := dest.Name
	bad := func(reason string) (string, error) {
		return "", &DestinationError{Destination: name, Reason: reason}
	}
	prefix := dest.Pattern.Prefix()
	if prefix == "" {
		return bad(fmt.Sprintf("unknown pattern %d", dest.Pattern))
	}
	if !strings.HasPrefix(name, prefix+".") || len(name) == len(prefix)+1 {
		return bad("not a " + dest.Pattern.String() + " destination (want " + prefix + ".<name>)")
	}
	if len(name) > 255 {
		return bad("longer than 255 bytes, the limit of an AMQP routing key")
	}
	for _, tok := range strings.Split(name, ".") {
		switch {
		case tok == "":
			return bad("empty token")
		case tok == "*" || tok == "#":
			return bad("a wildcard token (" + tok + ") would widen the binding")
		case strings.ContainsFunc(tok, func(r rune) bool { return r < 0x21 || r == 0x7f }):
			return bad("white space or control character")
		}
	}
	return name, nil
}

// groupQueue is the queue of a consumer group: PREFIX.<destination>.<group>.
func groupQueue(prefix string, dest driver.Destination, group string) (string, error) {
	if strings.ContainsFunc(group, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return "", &DestinationError{Destination: dest.Name, Reason: fmt.Sprintf("group %q has white space or a control character", group)}
	}
	q := prefix + "." + dest.Name + "." + group
	if len(q) > 255 {
		return "", &DestinationError{Destination: dest.Name, Reason: fmt.Sprintf("queue name of group %q is longer than 255 bytes", group)}
	}
	return q, nil
}

// keeperQueue is the queue that keeps the messages of a dead-letter
// destination from the moment they are published: PREFIX.<destination>.
func keeperQueue(prefix string, dest driver.Destination) string { return prefix + "." + dest.Name }
