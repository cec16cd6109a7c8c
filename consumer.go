package eventbus

import (
	"context"
	"errors"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// consumer drives one driver subscription: it receives, runs the handler,
// and settles every delivery — ack, nack with backoff, or dead-letter + term.
type consumer struct {
	bus  *Bus
	be   *backend
	dest driver.Destination
	sub  driver.Subscription
	kind consumerKind
	reg  *registration
	seed maphash.Seed
}

// receiveBatch is how many deliveries one Receive asks for.
const receiveBatch = 64

func newConsumer(b *Bus, r *registration, sub driver.Subscription) *consumer {
	return &consumer{bus: b, be: r.backend, dest: r.dest, sub: sub, kind: r.kind, reg: r, seed: maphash.MakeSeed()}
}

func (c *consumer) run() {
	defer c.bus.consumers.Done()
	defer func() {
		if err := c.sub.Close(context.WithoutCancel(c.bus.work)); err != nil && !errors.Is(err, ErrClosed) {
			c.bus.log.Warn("eventbus: close subscription", "destination", c.dest.Name, "backend", c.be.name, "error", err)
		}
	}()
	if c.kind == kindBatch {
		c.runBatches()
		return
	}
	c.runMessages()
}

// stopping reports whether err means the consumer must end.
func (c *consumer) stopping(err error) bool {
	return c.bus.intake.Err() != nil || errors.Is(err, ErrClosed)
}

// pause waits after a failed Receive, so that a broker outage does not spin.
func (c *consumer) pause(err error, failures int) {
	c.bus.log.Warn("eventbus: receive failed", "destination", c.dest.Name, "backend", c.be.name, "error", err)
	t := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 5*time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.bus.intake.Done():
	}
}

func (c *consumer) runMessages() {
	conc := 1
	if c.reg != nil {
		conc = c.reg.opts.concurrency
	}
	var workers []chan []*driver.Delivery
	var wg, batchWG sync.WaitGroup
	if conc > 1 {
		workers = make([]chan []*driver.Delivery, conc)
		for i := range workers {
			ch := make(chan []*driver.Delivery, 1)
			workers[i] = ch
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ds := range ch {
					c.process(ds)
					batchWG.Done()
				}
			}()
		}
		defer func() {
			for _, ch := range workers {
				close(ch)
			}
			wg.Wait()
		}()
	}
	parts := make([][]*driver.Delivery, conc)
	failures := 0
	next := 0
	for {
		ds, err := c.sub.Receive(c.bus.intake, receiveBatch)
		if err != nil {
			if c.stopping(err) {
				return
			}
			failures++
			c.pause(err, failures)
			continue
		}
		failures = 0
		if conc == 1 {
			c.process(ds)
			continue
		}
		// Same key → same worker, so per-key order holds; keyless messages
		// spread round-robin.
		for i := range parts {
			parts[i] = parts[i][:0]
		}
		for _, d := range ds {
			var w int
			if d.Message != nil && d.Message.Key != "" {
				w = int(maphash.String(c.seed, d.Message.Key) % uint64(conc))
			} else {
				w = next % conc
				next++
			}
			parts[w] = append(parts[w], d)
		}
		for i, p := range parts {
			if len(p) > 0 {
				batchWG.Add(1)
				workers[i] <- p
			}
		}
		batchWG.Wait()
	}
}

// process handles deliveries in order and acks the successful ones together.
func (c *consumer) process(ds []*driver.Delivery) {
	// Receive hands the slice over to us: reuse it for the acks.
	acks := ds[:0]
	for _, d := range ds {
		var ok bool
		switch c.kind {
		case kindReply:
			c.deliverReply(d)
			ok = true
		case kindQuery:
			ok = c.answer(d)
		default:
			ok = c.handle(d)
		}
		if ok {
			acks = append(acks, d)
		}
	}
	if len(acks) > 0 {
		if err := c.sub.Ack(c.bus.work, acks); err != nil {
			c.bus.log.Warn("eventbus: ack failed; messages will be redelivered", "destination", c.dest.Name, "count", len(acks), "error", err)
		}
	}
}

// handle runs the handler on d and settles failures itself; it reports
// whether d is to be acked.
func (c *consumer) handle(d *driver.Delivery) bool {
	if d.Err != nil {
		c.deadLetter([]*driver.Delivery{d}, d.Err)
		return false
	}
	call := func() error { return c.reg.handler.Handle(c.bus.handlerCx, d.Message) }
	err := safely(call)
	// A broker that never redelivers (core NATS) would lose the message on a
	// nack: retry here instead, with the same policy.
	for err != nil && !c.be.caps.Redelivery && !IsPermanent(err) && d.Attempt < c.bus.retry.MaxAttempts {
		if !c.sleep(c.bus.retry.backoff(d.Attempt)) {
			break
		}
		d.Attempt++
		err = safely(call)
	}
	if err == nil {
		return true
	}
	c.fail([]*driver.Delivery{d}, err)
	return false
}

// sleep waits for d and reports false if the bus began closing first.
func (c *consumer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.bus.intake.Done():
		return false
	}
}

// fail settles deliveries whose handling failed: dead-letter those whose error
// is permanent or whose attempts are used up, nack the rest with backoff.
func (c *consumer) fail(ds []*driver.Delivery, err error) {
	if IsPermanent(err) {
		c.deadLetter(ds, err)
		return
	}
	var dead, retry []*driver.Delivery
	attempt := 0
	for _, d := range ds {
		if d.Attempt >= c.bus.retry.MaxAttempts {
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
		c.nack(retry, c.bus.retry.backoff(attempt))
	}
}

// nack asks for redelivery after delay. Without native delay the consumer
// waits here (in-place retry) unless the bus is closing.
func (c *consumer) nack(ds []*driver.Delivery, delay time.Duration) {
	if !c.be.caps.NativeDelay && delay > 0 {
		c.sleep(delay)
		delay = 0
	}
	if err := c.sub.Nack(c.bus.work, ds, delay); err != nil {
		c.bus.log.Warn("eventbus: nack failed; the broker will redeliver after its ack wait", "destination", c.dest.Name, "error", err)
	}
}

// deadLetter publishes ds to the destination's dead-letter destination with
// the reason, then terminates them. If that publish fails the messages are
// nacked instead: nothing is dropped.
func (c *consumer) deadLetter(ds []*driver.Delivery, reason error) {
	dl := driver.DeadLetterOf(c.dest)
	if !c.be.caps.Serves(driver.DeadLetter) {
		if !c.be.caps.Redelivery {
			c.bus.log.Error("eventbus: message dropped: the backend neither dead-letters nor redelivers", "destination", c.dest.Name, "backend", c.be.name, "count", len(ds), "reason", reason)
			_ = c.sub.Term(c.bus.work, ds)
			return
		}
		c.bus.log.Error("eventbus: backend cannot dead-letter; message kept for redelivery", "destination", c.dest.Name, "backend", c.be.name, "reason", reason)
		c.nack(ds, c.bus.retry.MaxBackoff)
		return
	}
	msgs := make([]*driver.Message, len(ds))
	for i, d := range ds {
		m := d.Message
		if m == nil {
			m = &driver.Message{}
		}
		if m.Extensions == nil {
			m.Extensions = make(map[string]string, 3)
		}
		m.Extensions[driver.ExtDeadLetterReason] = reason.Error()
		m.Extensions[driver.ExtDeadLetterAttempts] = strconv.Itoa(d.Attempt)
		m.Extensions[driver.ExtDeadLetterOrigin] = c.dest.Name
		// A malformed message may lack required attributes; give it enough
		// of an envelope to travel.
		if m.ID == "" {
			m.ID = c.bus.newID()
		}
		if m.Source == "" {
			m.Source = c.bus.source
		}
		if m.Type == "" {
			m.Type = "eventbus.malformed"
		}
		msgs[i] = m
	}
	if err := c.be.drv.Publish(c.bus.work, dl, msgs); err != nil {
		c.bus.log.Error("eventbus: dead-letter publish failed; message kept for redelivery", "destination", c.dest.Name, "error", err)
		c.nack(ds, c.bus.retry.MaxBackoff)
		return
	}
	c.bus.log.Warn("eventbus: message dead-lettered", "destination", c.dest.Name, "dead_letter", dl.Name, "count", len(ds), "reason", reason)
	if err := c.sub.Term(c.bus.work, ds); err != nil {
		c.bus.log.Warn("eventbus: term failed after dead-lettering; a duplicate may follow", "destination", c.dest.Name, "error", err)
	}
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
			ds, err = c.sub.Receive(c.bus.intake, size)
			first = time.Now()
		} else {
			ctx, cancel := context.WithDeadline(c.bus.intake, first.Add(wait))
			ds, err = c.sub.Receive(ctx, size-len(batch))
			cancel()
		}
		if err != nil {
			switch {
			case c.stopping(err):
				c.flush(batch)
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
	err := safely(func() error { return c.reg.batch.HandleBatch(c.bus.handlerCx, msgs) })
	if err != nil {
		c.fail(batch, err)
		return
	}
	if err := c.sub.Ack(c.bus.work, batch); err != nil {
		c.bus.log.Warn("eventbus: batch ack failed; the batch will be redelivered", "destination", c.dest.Name, "count", len(batch), "error", err)
	}
}
