package eventbus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Query sends m (m.Type required) to queries.<service>.<type> and waits for
// the reply. Without a deadline on ctx, Options.QueryTimeout applies.
//
// It returns the reply, or an error that matches ErrTimeout (and
// context.DeadlineExceeded) when no reply came in time, ErrNoResponders when
// the backend knows nobody handles the query, or a *RemoteError carrying the
// handler's own error. It never returns a nil reply with a nil error.
//
// A backend with native request/reply is used natively; any other backend
// carries the request with m.ReplyTo set to this bus instance's reply
// destination, and the reply correlated by the request's id.
func (b *Bus) Query(ctx context.Context, service string, m *Message) (*Message, error) {
	if err := validateToken("service", service); err != nil {
		return nil, fmt.Errorf("eventbus: query: %w", err)
	}
	if err := checkMessage(m); err != nil {
		return nil, fmt.Errorf("eventbus: query: %w", err)
	}
	dest := b.destination(driver.Query, service, m.Type)
	be, err := b.backendFor(dest)
	if err != nil {
		return nil, fmt.Errorf("eventbus: query %s: %w", dest.Name, err)
	}
	b.fill(m)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.QueryTimeout)
		defer cancel()
	}
	if max := be.caps.MaxMessageSize; max > 0 && m.Size() > max {
		return nil, fmt.Errorf("eventbus: query %s: %w", dest.Name, &driver.TooLargeError{Size: m.Size(), Limit: max})
	}
	if obs := b.opts.Observer; obs != nil {
		done := obs.Publish(ctx, operation(OpQuery, dest, "", be), []*Message{m})
		reply, err := b.request(ctx, service, be, dest, m)
		done(err)
		return reply, err
	}
	return b.request(ctx, service, be, dest, m)
}

// request sends the query m to dest on be and waits for its reply.
func (b *Bus) request(ctx context.Context, service string, be *backend, dest driver.Destination, m *Message) (*Message, error) {
	var reply *Message
	var err error
	if be.rr != nil {
		reply, err = be.rr.Request(ctx, dest, m)
	} else {
		reply, err = b.requestViaReplies(ctx, be, dest, m)
	}
	switch {
	case err == nil && reply == nil:
		return nil, fmt.Errorf("eventbus: query %s via %s: %w: empty reply", dest.Name, be.name, ErrMalformed)
	case err == nil:
		return reply, remoteError(service, m.Type, reply)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return nil, &timeoutError{what: "query " + dest.Name + " via " + be.name}
	default:
		return nil, fmt.Errorf("eventbus: query %s via %s: %w", dest.Name, be.name, err)
	}
}

func (b *Bus) requestViaReplies(ctx context.Context, be *backend, dest driver.Destination, m *Message) (*Message, error) {
	if be.replyS == nil {
		return nil, fmt.Errorf("%w: no reply subscription", ErrCapability)
	}
	ch := make(chan *Message, 1)
	if _, dup := b.pending.LoadOrStore(m.ID, ch); dup {
		return nil, fmt.Errorf("%w: a query with id %q is already waiting", ErrInvalidName, m.ID)
	}
	defer b.pending.Delete(m.ID)
	m.ReplyTo = b.replyTo
	one := [1]*Message{m}
	if err := be.drv.Publish(ctx, dest, one[:]); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.intake.Done():
		return nil, ErrClosed
	}
}

// deliverReply hands a reply from the reply destination to its waiting query.
func (c *consumer) deliverReply(d *driver.Delivery) {
	if d.Err != nil || d.Message == nil {
		c.bus.log.Warn("eventbus: malformed reply dropped", "destination", c.dest.Name, "error", d.Err)
		return
	}
	if ch, ok := c.bus.pending.LoadAndDelete(d.Message.CausationID); ok {
		ch.(chan *Message) <- d.Message
	}
}

// answer runs a query handler on d and sends its reply; a query is acked
// whatever the handler returned, since the error travels in the reply.
func (c *consumer) answer(d *driver.Delivery) bool {
	req := d.Message
	var reply *Message
	var err error
	if d.Err != nil {
		err = d.Err
	} else {
		err = c.observe(OpAnswer, req, nil, func(ctx context.Context) error {
			var herr error
			c.running.Add(1)
			defer c.running.Add(-1)
			reply, herr = c.reg.query.HandleQuery(ctx, req)
			return herr
		})
	}
	if reply == nil || err != nil {
		reply = &Message{}
	}
	if req == nil {
		req = &Message{}
	}
	if reply.Type == "" {
		reply.Type = req.Type + ".reply"
	}
	c.bus.fill(reply)
	reply.CausationID = req.ID
	if reply.CorrelationID == "" {
		reply.CorrelationID = req.CorrelationID
	}
	if err != nil {
		if reply.Extensions == nil {
			reply.Extensions = make(map[string]string, 2)
		}
		// A handler may return an error of its own bus; the caller's
		// RemoteError says "eventbus: " already.
		msg := strings.TrimPrefix(err.Error(), "eventbus: ")
		var coded *CodedError
		if errors.As(err, &coded) {
			reply.Extensions[driver.ExtErrorCode] = coded.Code
			msg = coded.Err.Error()
		}
		reply.Extensions[driver.ExtError] = msg
	}
	var serr error
	switch {
	case req.ReplyTo != "":
		one := [1]*Message{reply}
		serr = c.be.drv.Publish(c.work, driver.Destination{Pattern: driver.Reply, Name: req.ReplyTo}, one[:])
	case c.be.rr != nil:
		serr = c.be.rr.Reply(c.work, d, reply)
	default:
		serr = errors.New("the query carries no reply address")
	}
	if serr != nil {
		c.bus.log.Warn("eventbus: reply not sent; the caller will time out", "destination", c.dest.Name, "error", serr)
	}
	return true
}

// remoteError turns an error reply into a *RemoteError.
func remoteError(service, qType string, reply *Message) error {
	msg, ok := reply.Extensions[driver.ExtError]
	if !ok {
		return nil
	}
	return &RemoteError{Service: service, Type: qType, Code: reply.Extensions[driver.ExtErrorCode], Message: msg}
}
