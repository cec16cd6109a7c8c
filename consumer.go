package eventbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// consumer drives one driver subscription: it receives, runs the handler,
// and settles every delivery — ack, nack with backoff, or dead-letter + term.
//
// Settlements go through a settler, so that a delivery is settled on the
// broker within milliseconds of its handler returning, whatever its
// neighbours do; the settler coalesces those that are ready together.
type consumer struct {
	bus   *Bus
	be    *backend
	dest  driver.Destination
	sub   driver.Subscription
	kind  consumerKind
	reg   *registration
	retry RetryPolicy

	intake     context.Context // cancelled when closing begins: take nothing new
	stopIntake context.CancelFunc
	work       context.Context // cancelled when the close deadline passed
	stopWork   context.CancelFunc
	handlerCx  context.Context // work plus the bus, for typed helpers
	closeCtx   atomic.Pointer[context.Context]
	done       chan struct{} // closed when run returned
	running    atomic.Int32  // handler calls in progress

	settler *settler
}

// receiveBatch is how many deliveries one Receive asks for.
const receiveBatch = 64

// closeGrace is how long a close waits, after its deadline cancelled the
// handlers' contexts, for handlers to return and for the backend to close.
const closeGrace = 500 * time.Millisecond

func newConsumer(b *Bus, r *registration, sub driver.Subscription) *consumer {
	c := &consumer{bus: b, be: r.backend, dest: r.dest, sub: sub, kind: r.kind, reg: r, retry: b.retry}
	if r.opts.retry != nil {
		c.retry = *r.opts.retry
	}
	c.init()
	return c
}

func newReplyConsumer(b *Bus, be *backend, dest driver.Destination, sub driver.Subscription) *consumer {
	c := &consumer{bus: b, be: be, dest: dest, sub: sub, kind: kindReply, retry: b.retry}
	c.init()
	return c
}

func (c *consumer) init() {
	c.intake, c.stopIntake = context.WithCancel(c.bus.intake)
	c.work, c.stopWork = context.WithCancel(c.bus.work)
	c.handlerCx = context.WithValue(c.work, busKey{}, c.bus)
	c.done = make(chan struct{})
	c.settler = newSettler(c)
}

func (c *consumer) run() {
	defer c.bus.consumers.Done()
	defer close(c.done)
	switch {
	case c.kind == kindBatch:
		c.runBatches()
	case c.reg != nil && c.reg.opts.concurrency > 1:
		c.runWorkers(c.reg.opts.concurrency)
	default:
		c.runInline()
	}
	c.settler.stop()
	ctx := c.bus.work
	if p := c.closeCtx.Load(); p != nil {
		ctx = *p
	}
	ctx, cancel := graceContext(ctx)
	defer cancel()
	if err := c.sub.Close(ctx); err != nil && !errors.Is(err, ErrClosed) {
		c.bus.log.Warn("eventbus: close subscription", "destination", c.dest.Name, "backend", c.be.name, "error", err)
	}
}

// graceContext returns ctx, or, when ctx is already done, a context that
// gives closeGrace more: enough for a driver to release what it holds.
func graceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), closeGrace)
}

// beginClose stops intake; ctx is the deadline of the close that began.
func (c *consumer) beginClose(ctx context.Context) {
	c.closeCtx.CompareAndSwap(nil, &ctx)
	c.stopIntake()
}

// closeConsumers closes cs: intake stops at once, in-flight handlers may
// finish until ctx ends, then their contexts are cancelled and closeConsumers
// waits closeGrace more at most. It reports a drain failure only if a
// consumer had not ended by ctx's end.
func closeConsumers(ctx context.Context, cs []*consumer) error {
	for _, c := range cs {
		c.beginClose(ctx)
	}
	var late []*consumer
	for _, c := range cs {
		select {
		case <-c.done:
		case <-ctx.Done():
			late = append(late, c)
		}
	}
	if len(late) == 0 {
		return nil
	}
	// The deadline passed: cancel the handlers, and give the consumers a
	// short grace to return what they hold.
	interrupted := 0
	for _, c := range late {
		if c.running.Load() > 0 {
			interrupted++
		}
		c.stopWork()
	}
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	stuck := 0
	for _, c := range late {
		select {
		case <-c.done:
		case <-grace.C:
			stuck++
		}
	}
	switch {
	case stuck > 0:
		return fmt.Errorf("eventbus: close: %d subscription(s) did not drain in time, a handler ignores its context: %w", stuck, ctx.Err())
	case interrupted > 0:
		return fmt.Errorf("eventbus: close: handlers did not drain in time: %w", ctx.Err())
	}
	return nil
}

// closing reports whether the consumer must start no further handler. On a
// backend that never redelivers, a message given back is lost, so what was
// received is still handled until the close deadline.
func (c *consumer) closing() bool {
	if c.be.caps.Redelivery {
		return c.intake.Err() != nil
	}
	return c.work.Err() != nil
}

// stopping reports whether err means the consumer must end.
func (c *consumer) stopping(err error) bool {
	return c.intake.Err() != nil || errors.Is(err, ErrClosed)
}

// pause waits after a failed Receive, so that a broker outage does not spin.
func (c *consumer) pause(err error, failures int) {
	c.bus.log.Warn("eventbus: receive failed", "destination", c.dest.Name, "backend", c.be.name, "error", err)
	t := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 5*time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.intake.Done():
	}
}

// receive returns the next deliveries, or nil when the consumer must end.
func (c *consumer) receive(max int, failures *int) []*driver.Delivery {
	for {
		ds, err := c.sub.Receive(c.intake, max)
		if err == nil {
			*failures = 0
			return ds
		}
		if c.stopping(err) {
			return nil
		}
		*failures++
		c.pause(err, *failures)
	}
}

// runInline handles deliveries one at a time, in order, on this goroutine.
func (c *consumer) runInline() {
	failures := 0
	for {
		ds := c.receive(receiveBatch, &failures)
		if ds == nil {
			return
		}
		for i, d := range ds {
			if c.closing() {
				c.giveBack(ds[i:])
				break
			}
			c.process(d)
		}
		// Out of work: what was handled goes to the broker now.
		c.settler.flush()
	}
}

// runWorkers handles deliveries on n workers. Deliveries with the same key run
// one after the other, in order, on whichever worker took the first of them;
// a slow key holds up only the deliveries of that key.
func (c *consumer) runWorkers(n int) {
	limit := c.reg.opts.maxInFlight
	if limit <= 0 {
		limit = max(receiveBatch, 4*n)
	}
	slots := make(chan struct{}, limit)
	ready := make(chan *driver.Delivery, n)
	var keysMu sync.Mutex
	waiting := map[string][]*driver.Delivery{} // key → deliveries behind the running one
	next := func(key string) *driver.Delivery {
		keysMu.Lock()
		defer keysMu.Unlock()
		q, busy := waiting[key]
		if !busy {
			return nil
		}
		if len(q) == 0 {
			delete(waiting, key)
			return nil
		}
		d := q[0]
		q[0] = nil
		waiting[key] = q[1:]
		return d
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ready {
				for d != nil {
					key := deliveryKey(d)
					if c.closing() {
						c.giveBack([]*driver.Delivery{d})
					} else {
						c.process(d)
					}
					<-slots
					d = nil
					if key != "" {
						d = next(key)
					}
				}
				if len(ready) == 0 {
					c.settler.flush() // out of work for now
				}
			}
		}()
	}
	defer func() {
		close(ready)
		wg.Wait()
	}()
	failures := 0
	for {
		// One slot per delivery taken; wait for the first, take what is free.
		select {
		case slots <- struct{}{}:
		case <-c.intake.Done():
			return
		}
		free := 1
		for free < receiveBatch {
			select {
			case slots <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		ds := c.receive(free, &failures)
		for range free - len(ds) {
			<-slots
		}
		if ds == nil {
			return
		}
		for _, d := range ds {
			if key := deliveryKey(d); key != "" {
				keysMu.Lock()
				if q, busy := waiting[key]; busy {
					waiting[key] = append(q, d)
					keysMu.Unlock()
					continue
				}
				waiting[key] = nil
				keysMu.Unlock()
			}
			ready <- d
		}
	}
}

func deliveryKey(d *driver.Delivery) string {
	if d == nil || d.Message == nil {
		return ""
	}
	return d.Message.Key
}

// process handles one delivery and settles it.
func (c *consumer) process(d *driver.Delivery) {
	switch c.kind {
	case kindReply:
		c.deliverReply(d)
		c.settle(d, opAck)
	case kindQuery:
		if c.answer(d) {
			c.settle(d, opAck)
		}
	default:
		if c.handle(d) {
			c.settle(d, opAck)
		}
	}
}

func (c *consumer) settle(d *driver.Delivery, op settleOp) { c.settler.add(d, op) }

// giveBack returns deliveries that no handler started to the backend at once,
// so that another member receives them.
func (c *consumer) giveBack(ds []*driver.Delivery) {
	if len(ds) == 0 {
		return
	}
	if !c.be.caps.Redelivery {
		c.bus.stats.dropped.Add(uint64(len(ds)))
		c.settled(ds, Dropped)
		c.bus.log.Error("eventbus: messages dropped at close: the backend does not redeliver", "destination", c.dest.Name, "backend", c.be.name, "count", len(ds))
	}
	if err := c.sub.Nack(context.WithoutCancel(c.work), ds, 0); err != nil {
		c.bus.log.Warn("eventbus: give back at close failed; the backend redelivers after its ack wait", "destination", c.dest.Name, "count", len(ds), "error", err)
	}
}

// handle runs the handler on d and settles failures itself; it reports
// whether d is to be acked.
func (c *consumer) handle(d *driver.Delivery) bool {
	if d.Err != nil {
		c.deadLetter([]*driver.Delivery{d}, d.Err)
		return false
	}
	if g := c.reg.opts.content.gate; g != nil && !c.admit(g, d) {
		return false
	}
	call := func() error {
		return c.observe(OpProcess, d.Message, nil, func(ctx context.Context) error { return c.reg.handler.Handle(ctx, d.Message) })
	}
	c.running.Add(1)
	err := call()
	// A broker that never redelivers (core NATS) would lose the message on a
	// nack: retry here instead, with the same policy.
	for err != nil && !c.be.caps.Redelivery && !IsPermanent(err) && !c.retry.exhausted(d.Attempt) {
		if !c.sleep(c.retry.backoff(d.Attempt)) {
			break
		}
		c.settled([]*driver.Delivery{d}, Retried)
		d.Attempt++
		err = call()
	}
	c.running.Add(-1)
	if err == nil {
		c.bus.stats.handled.Add(1)
		return true
	}
	c.fail([]*driver.Delivery{d}, err)
	return false
}

// sleep waits for d and reports false if the consumer began closing first.
func (c *consumer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.intake.Done():
		return false
	}
}

// fail settles deliveries whose handling failed: dead-letter those whose error
// is permanent or whose attempts are used up, nack the rest with backoff.
func (c *consumer) fail(ds []*driver.Delivery, err error) {
	c.bus.stats.failed.Add(uint64(len(ds)))
	if IsPermanent(err) {
		c.deadLetter(ds, err)
		return
	}
	var dead, retry []*driver.Delivery
	attempt := 0
	for _, d := range ds {
		if c.retry.exhausted(d.Attempt) {
			dead = append(dead, d)
		} else {
			retry = append(retry, d)
			attempt = max(attempt, d.Attempt)
		}
	}
	if len(dead) > 0 {
		c.deadLetter(dead, err)
	}
	if len(retry) > 0 {
		c.bus.log.Debug("eventbus: handler failed; will retry", "destination", c.dest.Name, "attempt", attempt, "error", err)
		c.settled(retry, Retried)
		c.nack(retry, c.retry.backoff(attempt))
	}
}

// nack asks for redelivery after delay. Without native delay the consumer
// waits here (in-place retry) unless it is closing.
func (c *consumer) nack(ds []*driver.Delivery, delay time.Duration) {
	if !c.be.caps.NativeDelay && delay > 0 {
		c.sleep(delay)
		delay = 0
	}
	if err := c.sub.Nack(context.WithoutCancel(c.work), ds, delay); err != nil {
		c.bus.log.Warn("eventbus: nack failed; the broker will redeliver after its ack wait", "destination", c.dest.Name, "error", err)
	}
}

// deadLetterRetries bounds how often a message whose dead-letter publish
// failed for a transient reason is redelivered to try again.
const deadLetterRetries = 10

// deadLetter publishes ds to the destination's dead-letter destination with
// the reason, then terminates them. Whatever was received can be
// dead-lettered: what the backend refuses (an oversize body, a header or
// extension it cannot carry) is cut or set aside and the reason says so. If
// the publish fails for a transient reason the messages are kept for
// redelivery a bounded number of times; past that, or if even the reduced
// message is refused, they are terminated with an error log and counted in
// Stats.Dropped — never redelivered forever.
func (c *consumer) deadLetter(ds []*driver.Delivery, reason error) {
	dl := driver.DeadLetterOf(c.dest)
	if !c.be.caps.Serves(driver.DeadLetter) {
		if !c.be.caps.Redelivery {
			c.drop(ds, reason, "the backend neither dead-letters nor redelivers")
			return
		}
		c.bus.log.Error("eventbus: backend cannot dead-letter; message kept for redelivery", "destination", c.dest.Name, "backend", c.be.name, "reason", reason)
		c.nack(ds, c.retry.MaxBackoff)
		return
	}
	limit := c.be.caps.MaxMessageSize
	for _, d := range ds {
		m := deadLetterMessage(c, d, reason, nil)
		one := [1]*driver.Message{m}
		err := publishDeduplicated(c.work, c.be.drv, dl, one[:])
		if errors.Is(err, driver.ErrDuplicate) {
			err = nil // the broker holds this dead letter already (a retried publish)
		}
		if err != nil && refused(err) {
			// Cut what the backend cannot carry and say so in the reason.
			m = deadLetterMessage(c, d, reason, func(m *driver.Message) []string { return reduce(m, limit) })
			one[0] = m
			err = publishDeduplicated(c.work, c.be.drv, dl, one[:])
			if errors.Is(err, driver.ErrDuplicate) {
				err = nil
			}
		}
		switch {
		case err == nil:
			c.bus.stats.deadLettered.Add(1)
			c.settled([]*driver.Delivery{d}, DeadLettered)
			c.bus.log.Warn("eventbus: message dead-lettered", "destination", c.dest.Name, "dead_letter", dl.Name, "id", m.ID, "reason", reason)
			c.settle(d, opTerm)
		case refused(err) || d.Attempt >= max(c.retry.MaxAttempts, 1)+deadLetterRetries:
			c.drop([]*driver.Delivery{d}, reason, "dead-letter publish failed: "+err.Error())
		default:
			c.bus.log.Error("eventbus: dead-letter publish failed; message kept for redelivery", "destination", c.dest.Name, "error", err)
			c.nack([]*driver.Delivery{d}, c.retry.MaxBackoff)
		}
	}
}

// drop terminates deliveries that cannot be handled nor dead-lettered.
func (c *consumer) drop(ds []*driver.Delivery, reason error, why string) {
	c.bus.stats.dropped.Add(uint64(len(ds)))
	c.settled(ds, Dropped)
	c.bus.log.Error("eventbus: message dropped: "+why, "destination", c.dest.Name, "backend", c.be.name, "count", len(ds), "reason", reason)
	for _, d := range ds {
		c.settle(d, opTerm)
	}
}

// refused reports whether a publish failed because of the message itself,
// which a retry would not change.
func refused(err error) bool {
	return errors.Is(err, driver.ErrTooLarge) || errors.Is(err, driver.ErrInvalid) || errors.Is(err, driver.ErrMalformed)
}

// maxReasonLen bounds the dead-letter reason carried as an extension.
const maxReasonLen = 1024

// deadLetterMessage builds the dead letter of d: its envelope plus the
// reason, the attempts and the origin. reduce, if not nil, cuts the message
// to what the backend can carry and returns notes on what it cut.
func deadLetterMessage(c *consumer, d *driver.Delivery, reason error, reduce func(*driver.Message) []string) *driver.Message {
	m := d.Message
	if m == nil {
		m = &driver.Message{}
	}
	m = m.Clone()
	var notes []string
	if reduce != nil {
		notes = reduce(m)
	}
	// A malformed message may lack required attributes; give it enough of an
	// envelope to travel.
	if m.ID == "" {
		m.ID = c.bus.newID()
	}
	if m.Source == "" {
		m.Source = c.bus.source
	}
	if m.Type == "" {
		m.Type = "eventbus.malformed"
	}
	text := reason.Error()
	if len(notes) > 0 {
		text += " (dead letter: " + strings.Join(notes, "; ") + ")"
	}
	if m.Extensions == nil {
		m.Extensions = make(map[string]string, 5)
	}
	m.Extensions[driver.ExtDeadLetterReason] = cleanValue(text, maxReasonLen)
	m.Extensions[driver.ExtDeadLetterAttempts] = strconv.Itoa(d.Attempt)
	m.Extensions[driver.ExtDeadLetterOrigin] = c.dest.Name
	if c.reg.group != "" {
		m.Extensions[driver.ExtDeadLetterGroup] = c.reg.group
	}
	m.Extensions[driver.ExtDeadLetterTime] = time.Now().UTC().Format(time.RFC3339Nano)
	return m
}

// reduce makes m publishable: it replaces attribute values the envelope
// check refuses with cleaned ones, sets aside extensions and headers it
// refuses, and cuts the data so that m fits limit (0: none). It returns what
// it changed.
func reduce(m *driver.Message, limit int) []string {
	var notes []string
	fix := func(name string, v *string) {
		if c := cleanValue(*v, 0); c != *v {
			*v = c
			notes = append(notes, name+" cleaned")
		}
	}
	fix("id", &m.ID)
	fix("source", &m.Source)
	fix("type", &m.Type)
	fix("subject", &m.Subject)
	fix("datacontenttype", &m.DataContentType)
	fix("dataschema", &m.DataSchema)
	fix("correlationid", &m.CorrelationID)
	fix("causationid", &m.CausationID)
	fix("traceparent", &m.TraceParent)
	fix("tracestate", &m.TraceState)
	fix("replyto", &m.ReplyTo)
	fix("key", &m.Key)
	for k, v := range m.Extensions {
		if driver.ExtensionNameProblem(k) != "" {
			delete(m.Extensions, k)
			notes = append(notes, "extension "+strconv.Quote(k)+" set aside")
			continue
		}
		if c := cleanValue(v, 0); c != v {
			m.Extensions[k] = c
			notes = append(notes, "extension "+k+" cleaned")
		}
	}
	for k, vs := range m.Header {
		bad := driver.HeaderNameProblem(k) != ""
		for _, v := range vs {
			bad = bad || cleanValue(v, 0) != v
		}
		if bad {
			delete(m.Header, k)
			notes = append(notes, "header "+strconv.Quote(k)+" set aside")
		}
	}
	if limit > 0 {
		// Leave room for the dead-letter extensions added after this.
		room := limit - (m.Size() - len(m.Data)) - maxReasonLen - 256
		if room < len(m.Data) {
			if room < 0 {
				room = 0
			}
			notes = append(notes, fmt.Sprintf("data cut from %d to %d bytes", len(m.Data), room))
			m.Data = m.Data[:room]
		}
	}
	return notes
}

// cleanValue turns s into a valid attribute value: control characters become
// spaces, surrounding white space and invalid UTF-8 go, and, when max > 0,
// it is cut to max bytes.
func cleanValue(s string, max int) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return ' '
		}
		return r
	}, s)
	if max > 0 && len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return strings.TrimSpace(s)
}

func (c *consumer) runBatches() {
	size, wait := c.reg.batchO.Size, c.reg.batchO.MaxWait
	batch := make([]*driver.Delivery, 0, size)
	var first time.Time
	failures := 0
	for {
		var ds []*driver.Delivery
		var err error
		if len(batch) == 0 {
			ds, err = c.sub.Receive(c.intake, size)
			first = time.Now()
		} else {
			ctx, cancel := context.WithDeadline(c.intake, first.Add(wait))
			ds, err = c.sub.Receive(ctx, size-len(batch))
			cancel()
		}
		if err != nil {
			switch {
			case c.stopping(err):
				// A partial batch is handled at close while the close
				// deadline allows.
				if c.work.Err() == nil {
					c.flush(batch)
				} else {
					c.giveBack(batch)
				}
				return
			case errors.Is(err, context.DeadlineExceeded):
				c.flush(batch)
				batch = batch[:0]
			default:
				failures++
				c.pause(err, failures)
			}
			continue
		}
		failures = 0
		for _, d := range ds {
			if d.Err != nil {
				c.deadLetter([]*driver.Delivery{d}, d.Err)
				continue
			}
			if g := c.reg.opts.content.gate; g != nil && !c.admit(g, d) {
				continue
			}
			batch = append(batch, d)
		}
		if len(batch) >= size || (len(batch) > 0 && !time.Now().Before(first.Add(wait))) {
			c.flush(batch)
			batch = batch[:0]
		}
	}
}

// flush hands a batch to the handler and settles it as a whole.
func (c *consumer) flush(batch []*driver.Delivery) {
	if len(batch) == 0 {
		return
	}
	msgs := make([]*Message, len(batch))
	for i, d := range batch {
		msgs[i] = d.Message
	}
	c.running.Add(1)
	err := c.observe(OpProcessBatch, nil, msgs, func(ctx context.Context) error { return c.reg.batch.HandleBatch(ctx, msgs) })
	c.running.Add(-1)
	if err != nil {
		c.fail(batch, err)
		return
	}
	c.bus.stats.handled.Add(uint64(len(batch)))
	for _, d := range batch {
		c.settle(d, opAck)
	}
	c.settler.flush()
}
