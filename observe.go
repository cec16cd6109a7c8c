package eventbus

import (
	"context"
	"reflect"
	"strings"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// Observer watches a bus's traffic: package telemetry implements it with
// OpenTelemetry traces and metrics. Options.Observer is nil by default, and
// a nil Observer costs nothing: no call, no allocation.
//
// The bus calls an Observer on the goroutines that publish and handle, so an
// implementation must be safe for concurrent use and quick. It must not keep
// the messages it is given, nor the slices they come in, nor modify them
// beyond what a method's documentation allows.
type Observer interface {
	// Publish is called just before msgs (one message, a stream batch, or a
	// query's request) are handed to their backend, with their ID, Source
	// and Time filled. It may set their TraceParent and TraceState, and fill
	// an empty CorrelationID or CausationID, so that consumers continue the
	// trace. The bus calls the returned function once with the outcome: the
	// backend's confirmation (nil) or error; for a query, the reply's
	// arrival or the query's error.
	Publish(ctx context.Context, op Operation, msgs []*Message) (done func(error))
	// Handle is called before a handler runs on msgs: one message for a
	// message or query handler, the whole batch for a batch handler. The
	// context it returns is the handler's (a child of ctx), so that what the
	// handler does nests under what the Observer started. The bus calls the
	// returned function once with the handler's error when it returned (a
	// panic is a *PanicError). A message retried in place (on a backend that
	// never redelivers) is a new Handle call per attempt.
	Handle(ctx context.Context, op Operation, msgs []*Message) (context.Context, func(error))
	// Settled is called for each message whose handling failed, with what
	// the bus did with it. Together with Handle's outcomes these are the
	// counts of Bus.Stats, labelled by operation.
	Settled(op Operation, m *Message, s Settlement)
}

// Operation describes what an Observer call is about. Its fields are bounded
// (no message ids), fit for metric labels.
type Operation struct {
	Kind OperationKind
	// Pattern and Destination are the logical destination's.
	Pattern     Pattern
	Destination string
	// Group is the consumer group of a handling (empty for none).
	Group string
	// Backend is the name the backend was registered under; System names
	// its broker the way the OpenTelemetry messaging conventions do
	// ("nats", "kafka", "rabbitmq", "aws_sqs", "redis", "eventbus.memory"), or
	// is empty for a driver the bus does not know.
	Backend string
	System  string
}

// OperationKind says what an Operation does.
type OperationKind uint8

// The operation kinds.
const (
	// OpSend publishes messages.
	OpSend OperationKind = iota + 1
	// OpQuery sends a query and waits for its reply (the client side).
	OpQuery
	// OpProcess runs a message handler.
	OpProcess
	// OpProcessBatch runs a batch handler on a stream batch.
	OpProcessBatch
	// OpAnswer runs a query handler (the server side).
	OpAnswer
)

// String returns the kind's name: send, query, process, process_batch or
// answer.
func (k OperationKind) String() string {
	switch k {
	case OpSend:
		return "send"
	case OpQuery:
		return "query"
	case OpProcess:
		return "process"
	case OpProcessBatch:
		return "process_batch"
	case OpAnswer:
		return "answer"
	}
	return "unknown"
}

// Settlement is what the bus did with a message whose handling failed.
type Settlement uint8

// The settlements after a failure.
const (
	// Retried: the message will be delivered again (redelivery by the
	// backend, or a retry in place).
	Retried Settlement = iota + 1
	// DeadLettered: the message was published to its dead-letter
	// destination (Stats.DeadLettered).
	DeadLettered
	// Dropped: the message was terminated without being handled or
	// dead-lettered (Stats.Dropped).
	Dropped
)

// String returns the settlement's name: retried, dead_lettered or dropped.
func (s Settlement) String() string {
	switch s {
	case Retried:
		return "retried"
	case DeadLettered:
		return "dead_lettered"
	case Dropped:
		return "dropped"
	}
	return "unknown"
}

func operation(kind OperationKind, dest driver.Destination, group string, be *backend) Operation {
	return Operation{Kind: kind, Pattern: dest.Pattern, Destination: dest.Name, Group: group, Backend: be.name, System: systemOf(be.drv)}
}

// systemOf names the broker of d after its driver package.
func systemOf(d driver.Driver) string {
	t := reflect.TypeOf(d)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	path := t.PkgPath()
	switch path[strings.LastIndexByte(path, '/')+1:] {
	case "natsbus":
		return "nats"
	case "kafkabus":
		return "kafka"
	case "rabbitbus":
		return "rabbitmq"
	case "awsbus":
		return "aws_sqs"
	case "redisbus":
		return "redis"
	case "membus":
		return "eventbus.memory"
	}
	return ""
}

// send hands msgs to be's driver, observed when an Observer is set.
func (b *Bus) send(ctx context.Context, be *backend, dest driver.Destination, msgs []*Message) error {
	obs := b.opts.Observer
	if obs == nil {
		return b.publishTo(ctx, be, dest, msgs)
	}
	done := obs.Publish(ctx, operation(OpSend, dest, "", be), msgs)
	err := b.publishTo(ctx, be, dest, msgs)
	done(err)
	return err
}

// operation describes this consumer's handling of kind.
func (c *consumer) operation(kind OperationKind) Operation {
	group := ""
	if c.reg != nil {
		group = c.reg.group
	}
	return operation(kind, c.dest, group, c.be)
}

// observe runs fn on the handler context, recovering a panic into a
// *PanicError. With an Observer, the context is the one Observer.Handle
// returned for m (when not nil) or batch.
func (c *consumer) observe(kind OperationKind, m *Message, batch []*Message, fn func(ctx context.Context) error) error {
	obs := c.bus.opts.Observer
	if obs == nil {
		return safely(func() error { return fn(c.handlerCx) })
	}
	var one *[1]*Message
	if m != nil {
		one = oneMessage.Get().(*[1]*Message)
		one[0] = m
		batch = one[:]
	}
	ctx, done := obs.Handle(c.handlerCx, c.operation(kind), batch)
	err := safely(func() error { return fn(ctx) })
	done(err)
	if one != nil {
		one[0] = nil
		oneMessage.Put(one)
	}
	return err
}

// oneMessage pools the slices that hand a single message to
// Observer.Handle, which must not keep them.
var oneMessage = sync.Pool{New: func() any { return new([1]*Message) }}

// settled tells the Observer, if any, what became of ds.
func (c *consumer) settled(ds []*driver.Delivery, s Settlement) {
	obs := c.bus.opts.Observer
	if obs == nil {
		return
	}
	op := c.operation(OpProcess)
	if c.kind == kindBatch {
		op.Kind = OpProcessBatch
	}
	for _, d := range ds {
		obs.Settled(op, d.Message, s)
	}
}
