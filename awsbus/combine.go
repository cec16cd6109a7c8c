package awsbus

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/marty-msf/eventbus/driver"
)

// A combiner starts a batch call at once while fewer than eagerCalls are in
// flight to its topic or queue; beyond that, only for a full batch, and
// never beyond maxCombinedCalls. A caller that cannot start one waits for a
// call to return: the messages that pile up meanwhile leave together.
const (
	eagerCalls       = 2
	maxCombinedCalls = 8
)

// combiner merges the Publish calls that concurrent callers make to one
// topic or queue into shared batch calls (PublishBatch, SendMessageBatch):
// a caller sends at once while few calls are in flight (see eagerCalls),
// taking with it whatever other callers left waiting (up to a batch's ten
// entries and 256 KiB); otherwise it waits until one of the calls returns,
// and then either finds its messages sent by another caller or sends them
// itself. The messages of one Publish call always travel in
// one batch call (or, over 256 KiB, in consecutive ones of the same
// caller), in their order.
type combiner struct {
	limit int // entries per batch call
	send  func(ctx context.Context, msgs []*driver.Message, wire []*wireMessage) error
	calls *callGroup // the driver's, which Close waits for; nil: none

	mu       sync.Mutex
	pending  []*publishRequest
	entries  int // messages in pending
	inflight int
	changed  chan struct{} // closed and replaced when a call returns
}

// publishRequest is one Publish call waiting in a combiner.
type publishRequest struct {
	ctx   context.Context
	msgs  []*driver.Message
	wire  []*wireMessage
	size  int
	taken bool          // in a batch call (mu)
	done  chan struct{} // closed when err is set
	err   error
}

func newCombiner(limit int, send func(context.Context, []*driver.Message, []*wireMessage) error) *combiner {
	return &combiner{limit: limit, send: send, changed: make(chan struct{})}
}

// combinerFor returns the combiner of the topic or queue key, made with
// limit and send the first time.
func (d *Driver) combinerFor(key string, limit int, send func(context.Context, []*driver.Message, []*wireMessage) error) *combiner {
	if c, ok := d.combiners.Load(key); ok {
		return c.(*combiner)
	}
	nc := newCombiner(limit, send)
	nc.calls = d.calls
	c, _ := d.combiners.LoadOrStore(key, nc)
	return c.(*combiner)
}

// callGroup counts the batch calls that combiners run on goroutines of
// their own, so that Driver.Close waits for them, and ends them when its
// context ends. The methods do nothing on a nil *callGroup.
type callGroup struct {
	ctx    context.Context // ends every call: Close gave up waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	n      int
	idle   chan struct{} // closed while n is 0
	closed bool          // wait returned: no more calls
}

func newCallGroup() *callGroup {
	g := &callGroup{idle: make(chan struct{})}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	close(g.idle)
	return g
}

// add counts a call about to start; false after wait returned (the
// driver is closed).
func (g *callGroup) add() bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	return true
}

func (g *callGroup) done() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// wait returns once no call is in flight. When ctx ends first, it ends the
// calls (and every later one), waits for them to return, and returns
// ctx's error.
func (g *callGroup) wait(ctx context.Context) error {
	var err error
	for {
		g.mu.Lock()
		if g.n == 0 {
			g.closed = true
			g.mu.Unlock()
			g.cancel()
			return err
		}
		idle := g.idle
		g.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
				g.cancel()
			}
			<-idle
		}
	}
}

// publish sends msgs (fewer than limit) in a batch call shared with other
// callers, and returns the outcome of its own entries. When ctx ends
// before its messages left, it returns ctx's error and they are not sent;
// when it ends during their batch call, it returns ctx's error without
// waiting: they may or may not have been accepted (as with a call of its
// own cancelled in flight).
func (c *combiner) publish(ctx context.Context, msgs []*driver.Message, wire []*wireMessage) error {
	r := &publishRequest{ctx: ctx, msgs: msgs, wire: wire, done: make(chan struct{})}
	for _, w := range wire {
		r.size += w.size()
	}
	c.mu.Lock()
	c.pending = append(c.pending, r)
	c.entries += len(msgs)
	for {
		select {
		case <-r.done:
			c.mu.Unlock()
			return r.err
		default:
		}
		if !r.taken && (c.inflight < eagerCalls || c.inflight < maxCombinedCalls && c.entries >= c.limit) {
			// The call runs on a goroutine of its own, which ends when it
			// returns, so that this caller waits for it as the others do
			// and returns at once when its context ends.
			batch := c.take()
			if !c.calls.add() {
				// Publish checked the driver open before Close began.
				for _, b := range batch {
					b.err = errClosed
					close(b.done)
				}
				continue
			}
			c.inflight++
			go func() {
				defer c.calls.done()
				c.run(batch)
				c.mu.Lock()
				c.inflight--
				close(c.changed)
				c.changed = make(chan struct{})
				c.mu.Unlock()
			}()
			continue
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-r.done:
			return r.err
		case <-changed:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			if !r.taken {
				if i := indexOf(c.pending, r); i >= 0 {
					c.pending = append(c.pending[:i], c.pending[i+1:]...)
					c.entries -= len(r.msgs)
				}
			}
			c.mu.Unlock()
			return ctx.Err()
		}
	}
}

func indexOf(rs []*publishRequest, r *publishRequest) int {
	for i, x := range rs {
		if x == r {
			return i
		}
	}
	return -1
}

// take removes from the head of the pending requests those that fit one
// batch call (the first always does); c.mu is held.
func (c *combiner) take() []*publishRequest {
	n, entries, size := 0, 0, 0
	for _, r := range c.pending {
		if n > 0 && (entries+len(r.msgs) > c.limit || size+r.size > maxWireSize) {
			break
		}
		r.taken = true
		n, entries, size = n+1, entries+len(r.msgs), size+r.size
	}
	batch := make([]*publishRequest, n)
	copy(batch, c.pending)
	c.pending = append(c.pending[:0], c.pending[n:]...)
	c.entries -= entries
	return batch
}

// run makes the batch call for batch and hands each request its outcome.
// The call runs until it returns, every request's context has ended, or
// the driver's Close gave up waiting for it.
func (c *combiner) run(batch []*publishRequest) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	defer cancel()
	if c.calls != nil {
		defer context.AfterFunc(c.calls.ctx, cancel)()
	}
	var left atomic.Int32
	left.Store(int32(len(batch)))
	for _, r := range batch {
		stop := context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	var msgs []*driver.Message
	var wire []*wireMessage
	if len(batch) == 1 {
		msgs, wire = batch[0].msgs, batch[0].wire
	} else {
		for _, r := range batch {
			msgs = append(msgs, r.msgs...)
			wire = append(wire, r.wire...)
		}
	}
	err := c.send(ctx, msgs, wire)
	var be *BatchError
	if len(batch) == 1 || !errors.As(err, &be) {
		for _, r := range batch {
			r.err = err
			close(r.done)
		}
		return
	}
	// Each caller learns about its own refused entries only.
	lo := 0
	for _, r := range batch {
		hi := lo + len(r.msgs)
		var mine []EntryError
		for _, f := range be.Failed {
			if f.index >= lo && f.index < hi {
				mine = append(mine, f)
			}
		}
		if len(mine) > 0 {
			r.err = &BatchError{Sent: len(r.msgs), Failed: mine}
		}
		close(r.done)
		lo = hi
	}
}
