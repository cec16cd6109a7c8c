package driver

// Capabilities declares what a driver can honestly do. The bus validates routes
// against them at Start, and the conformance suite checks every claim.
type Capabilities struct {
	// Name identifies the driver in errors and metrics ("membus", "nats"...).
	Name string

	// Durable: a durable group keeps its position and unacked messages while
	// no member is connected, and resumes where it stopped.
	Durable bool

	// ConsumerGroups: subscriptions with the same group compete for messages.
	ConsumerGroups bool

	// OrderingByKey: messages with the same Key reach a group's consumer in
	// publish order (when that group has one consumer and nothing is nacked).
	OrderingByKey bool

	// Redelivery: a nacked or unsettled message is delivered again.
	Redelivery bool

	// NativeDelay: Nack honours its delay on the broker. Without it the bus
	// waits before it nacks.
	NativeDelay bool

	// NativeRequestReply: the driver implements RequestReplier.
	NativeRequestReply bool

	// Patterns lists the patterns this driver serves. A pattern it does not
	// list cannot be routed to it.
	Patterns []Pattern

	// MaxMessageSize is the largest Message.Size the driver accepts.
	MaxMessageSize int

	// AttributeSelect: the driver applies SubscribeOptions.Select on the
	// broker (at least on some destinations, as its documentation says), so
	// that messages it excludes never reach the process.
	AttributeSelect bool
}

// Serves reports whether p is among c.Patterns.
func (c Capabilities) Serves(p Pattern) bool {
	for _, q := range c.Patterns {
		if q == p {
			return true
		}
	}
	return false
}
