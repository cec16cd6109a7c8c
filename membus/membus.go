package membus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// Defaults of [Options].
const (
	DefaultMaxMessageSize = 1 << 20
	DefaultBufferSize     = 8192
	DefaultAckWait        = 30 * time.Second
)

// Errors of settlement and reply, wrapped with the operation.
var (
	// ErrNotInFlight: the delivery was settled already.
	ErrNotInFlight = errors.New("delivery not in flight")
	// ErrForeignDelivery: the delivery was not produced by this subscription
	// (or, for Reply, by this broker).
	ErrForeignDelivery = errors.New("delivery from another subscription")
	// ErrNotRequest: Reply was given a delivery that carries no request.
	ErrNotRequest = errors.New("delivery carries no request")
)

// Options configures a broker. The zero value (and a nil *Options) means the
// defaults; a zero or negative field means its default.
type Options struct {
	// MaxMessageSize is the largest driver.Message.Size accepted.
	// Default 1 MiB.
	MaxMessageSize int
	// BufferSize bounds each queue (private or group), in messages.
	// Default 8192.
	BufferSize int
	// AckWait is how long the unsettled deliveries of a connection that
	// crashed ([Driver.Crash]) stay away from their queue, counted from when
	// they were handed out; SubscribeOptions.AckWait overrides it. A live
	// subscription holds its deliveries as long as it likes. Default 30s.
	AckWait time.Duration
	// DeadLetterLimit bounds the dead letters the broker keeps for
	// driver.DeadLetterStore, in messages, over all its dead-letter
	// destinations; beyond it the oldest are dropped and counted
	// ([Driver.DeadLettersDropped]). Default 10,000.
	DeadLetterLimit int
	// DeadLetterMaxBytes bounds the same dead letters by their
	// driver.Message.Size. Default 64 MiB.
	DeadLetterMaxBytes int
}

// broker is the state shared by every connection of one membus.
type broker struct {
	maxSize  int
	capacity int
	ackWait  time.Duration
	epoch    time.Time

	mu    sync.RWMutex
	dests map[string]*destination

	dl *deadLetters // what was published to dead-letter destinations
}

// destination holds the queues of one destination name.
type destination struct {
	groups map[string]*queue
	// queues is replaced, never modified, so that Publish can range over a
	// snapshot without holding the broker lock.
	queues []*queue
}

// now is monotonic nanoseconds since the broker started.
func (b *broker) now() int64 { return int64(time.Since(b.epoch)) }

// queuesOf returns the current queues of name.
func (b *broker) queuesOf(name string) []*queue {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if d := b.dests[name]; d != nil {
		return d.queues
	}
	return nil
}

// Driver is one connection to an in-memory broker. It implements
// driver.Driver, driver.RequestReplier and driver.GroupDeclarer.
type Driver struct {
	b *broker

	closed atomic.Bool
	done   chan struct{} // closed by Close: wakes calls blocked on this connection

	mu   sync.Mutex
	subs map[*subscription]struct{} // nil once closed
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.RequestReplier = (*Driver)(nil)
	_ driver.GroupDeclarer  = (*Driver)(nil)
)

// New creates an in-memory broker and returns a first connection to it.
// A nil opts means the defaults.
func New(opts *Options) *Driver {
	var o Options
	if opts != nil {
		o = *opts
	}
	b := &broker{
		maxSize:  o.MaxMessageSize,
		capacity: o.BufferSize,
		ackWait:  o.AckWait,
		epoch:    time.Now(),
		dests:    make(map[string]*destination),
		dl:       newDeadLetters(o.DeadLetterLimit, o.DeadLetterMaxBytes),
	}
	if b.maxSize <= 0 {
		b.maxSize = DefaultMaxMessageSize
	}
	if b.capacity <= 0 {
		b.capacity = DefaultBufferSize
	}
	if b.ackWait <= 0 {
		b.ackWait = DefaultAckWait
	}
	return newConn(b)
}

func newConn(b *broker) *Driver {
	return &Driver{b: b, done: make(chan struct{}), subs: make(map[*subscription]struct{})}
}

// Connect opens another independent connection to the same broker. It works
// even when d is closed: the broker lives as long as any reference to it.
func (d *Driver) Connect() *Driver { return newConn(d.b) }

// Capabilities reports every power: membus serves every pattern.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Name:               "membus",
		Durable:            true,
		ConsumerGroups:     true,
		OrderingByKey:      true,
		Redelivery:         true,
		NativeDelay:        true,
		NativeRequestReply: true,
		Patterns: []driver.Pattern{
			driver.Event, driver.Command, driver.Query, driver.Stream,
			driver.Broadcast, driver.Reply, driver.DeadLetter,
		},
		MaxMessageSize: d.b.maxSize,
	}
}

// checkMessages refuses nil, invalid and over-size messages before anything
// is queued.
func (d *Driver) checkMessages(msgs []*driver.Message) error {
	for i, m := range msgs {
		if m == nil {
			return &driver.MalformedError{Reason: "nil message at index " + strconv.Itoa(i)}
		}
	}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return err
	}
	return driver.CheckSize(msgs, d.b.maxSize)
}

// Publish copies msgs into every queue of dest, in order, and returns once
// all are queued. It blocks while a queue is full.
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if d.closed.Load() {
		return fmt.Errorf("membus: publish to %q: %w", dest.Name, driver.ErrClosed)
	}
	if err := d.checkMessages(msgs); err != nil {
		return fmt.Errorf("membus: publish to %q: %w", dest.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("membus: publish to %q: %w", dest.Name, err)
	}
	for _, q := range d.b.queuesOf(dest.Name) {
		if err := q.push(ctx, d.done, msgs, nil); err != nil {
			return fmt.Errorf("membus: publish to %q: %w", dest.Name, err)
		}
	}
	if dest.Pattern == driver.DeadLetter {
		d.b.dl.keep(dest.Name, msgs)
	}
	return nil
}

// Subscribe opens a subscription on dest; it receives every message
// published after Subscribe returns.
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("membus: subscribe to %q: %w", dest.Name, err)
	}
	ackWait := opts.AckWait
	if ackWait <= 0 {
		ackWait = d.b.ackWait
	}
	s := &subscription{
		conn:        d,
		dest:        dest.Name,
		ackWait:     int64(ackWait),
		maxInFlight: opts.MaxInFlight,
		done:        make(chan struct{}),
		room:        make(chan struct{}, 1),
	}
	// The connection lock is held while joining, so that Close either sees
	// the subscription or makes Subscribe fail.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.subs == nil {
		return nil, fmt.Errorf("membus: subscribe to %q: %w", dest.Name, driver.ErrClosed)
	}
	d.b.join(s, dest.Name, opts.Group, opts.Durable)
	d.subs[s] = struct{}{}
	return s, nil
}

// join attaches s to the queue of (name, group), creating it when needed.
func (b *broker) join(s *subscription, name, group string, durable bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queue(name, group)
	s.q = q
	q.mu.Lock()
	if durable && group != "" {
		q.durable = true
	}
	q.addMember(s)
	q.mu.Unlock()
}

// queue returns the queue of (name, group), creating it when needed; a
// private queue (group "") is always new. It runs under b.mu.
func (b *broker) queue(name, group string) *queue {
	dst := b.dests[name]
	if dst == nil {
		dst = &destination{groups: make(map[string]*queue)}
		b.dests[name] = dst
	}
	var q *queue
	if group != "" {
		q = dst.groups[group]
	}
	if q == nil {
		q = newQueue(b, group)
		if group != "" {
			dst.groups[group] = q
		}
		qs := make([]*queue, len(dst.queues), len(dst.queues)+1)
		copy(qs, dst.queues)
		dst.queues = append(qs, q)
	}
	return q
}

// DeclareGroup creates the durable group opts.Group on dest, if it does not
// exist yet, so that it keeps what is published before its first member
// subscribes. A group that exists already, durable or not, becomes durable.
// Only durable groups can be declared: a non-durable group would be gone at
// once, so a Group "" or Durable false fails with an error matching
// driver.ErrUnsupported.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if d.closed.Load() {
		return fmt.Errorf("membus: declare group %q on %q: %w", opts.Group, dest.Name, driver.ErrClosed)
	}
	if opts.Group == "" || !opts.Durable {
		return fmt.Errorf("membus: declare group %q on %q: only a named durable group can exist without members: %w",
			opts.Group, dest.Name, driver.ErrUnsupported)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("membus: declare group %q on %q: %w", opts.Group, dest.Name, err)
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	q := d.b.queue(dest.Name, opts.Group)
	q.mu.Lock()
	q.durable = true
	q.mu.Unlock()
	return nil
}

// remove detaches q from destination name, under b.mu.
func (b *broker) remove(name string, q *queue) {
	dst := b.dests[name]
	if dst == nil {
		return
	}
	if q.group != "" && dst.groups[q.group] == q {
		delete(dst.groups, q.group)
	}
	qs := make([]*queue, 0, len(dst.queues))
	for _, x := range dst.queues {
		if x != q {
			qs = append(qs, x)
		}
	}
	dst.queues = qs
	if len(qs) == 0 {
		delete(b.dests, name)
	}
}

// Request sends req to dest and waits for the first reply.
func (d *Driver) Request(ctx context.Context, dest driver.Destination, req *driver.Message) (*driver.Message, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, driver.ErrClosed)
	}
	msgs := []*driver.Message{req}
	if err := d.checkMessages(msgs); err != nil {
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, err)
	}
	qs := d.b.queuesOf(dest.Name)
	responders := false
	for _, q := range qs {
		if q.members.Load() > 0 {
			responders = true
			break
		}
	}
	if !responders {
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, driver.ErrNoResponders)
	}
	// One slot: the first reply wins, later ones are discarded by Reply.
	reply := make(chan *driver.Message, 1)
	for _, q := range qs {
		if err := q.push(ctx, d.done, msgs, reply); err != nil {
			return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, err)
		}
	}
	select {
	case m := <-reply:
		return m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, ctx.Err())
	case <-d.done:
		return nil, fmt.Errorf("membus: request to %q: %w", dest.Name, driver.ErrClosed)
	}
}

// Reply answers the request carried by dlv with a copy of reply. It returns
// nil when the requester already gave up or got another reply.
func (d *Driver) Reply(ctx context.Context, dlv *driver.Delivery, reply *driver.Message) error {
	if d.closed.Load() {
		return fmt.Errorf("membus: reply: %w", driver.ErrClosed)
	}
	var t *tracked
	if dlv != nil {
		t, _ = dlv.Handle.(*tracked)
	}
	if t == nil || t.sub.q.b != d.b {
		return fmt.Errorf("membus: reply: %w", ErrForeignDelivery)
	}
	if t.e.reply == nil {
		return fmt.Errorf("membus: reply on %q: %w", t.sub.dest, ErrNotRequest)
	}
	if err := d.checkMessages([]*driver.Message{reply}); err != nil {
		return fmt.Errorf("membus: reply on %q: %w", t.sub.dest, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("membus: reply on %q: %w", t.sub.dest, err)
	}
	select {
	case t.e.reply <- reply.Clone():
	default:
	}
	return nil
}

// Close closes every subscription of this connection, handing their
// unsettled deliveries back to their queues at once, and wakes its blocked
// calls. Other connections keep working. Close is idempotent. It waits for
// nothing but the broker's locks, so it returns promptly whatever ctx says.
func (d *Driver) Close(ctx context.Context) error {
	d.shutdown(false)
	return nil
}

// Crash simulates the death of the process that holds this connection, for
// tests of what happens to the messages it was handling. The connection
// closes as with Close, except that the unsettled deliveries of its
// subscriptions go back to their queues only when their AckWait has passed
// since they were handed out, as a broker redelivers the messages of a
// consumer that stopped answering. Close after Crash does nothing more.
func (d *Driver) Crash() { d.shutdown(true) }

func (d *Driver) shutdown(crash bool) {
	d.mu.Lock()
	subs := d.subs
	d.subs = nil
	if subs != nil {
		d.closed.Store(true)
		close(d.done)
	}
	d.mu.Unlock()
	for s := range subs {
		s.close(crash)
	}
}
