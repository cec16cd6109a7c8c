package awsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus/driver"
)

// subscription consumes one SQS queue: a poller goroutine long-polls it while
// fewer than maxInFlight deliveries are held, and an extender goroutine keeps
// the visibility timeout of every held delivery from running out.
type subscription struct {
	d           *Driver
	dest        driver.Destination
	queueURL    string
	visibility  time.Duration
	maxInFlight int

	// Private queues (private subscriptions, broadcast, replies) are removed
	// on close, with their SNS subscription.
	private bool
	subARN  string

	pollCtx    context.Context
	pollCancel context.CancelFunc
	done       chan struct{} // closed when closing starts
	wg         sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	buf     []*driver.Delivery   // received, not handed out
	held    map[string]time.Time // receipt handle of every unsettled delivery → its visibility deadline
	byID    map[string]*handle   // SQS message id of every unsettled delivery → its handle
	changed chan struct{}        // closed and replaced on every change of buf or held
}

// handle is a Delivery's Handle: the receipt handle of its latest receive
// (sub.mu) and the SQS message id.
type handle struct {
	sub     *subscription
	id      string
	receipt string
}

// Subscribe implements driver.Driver. Topic-based patterns consume a queue
// subscribed to the destination's topic: the group's queue, or a queue of
// this subscription alone when Group is empty and for broadcasts. The other
// patterns consume the destination's queue, members of any group competing.
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	if err := checkDestination(dest); err != nil {
		return nil, fmt.Errorf("awsbus: subscribe: %w", err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errClosed
	}
	d.nextSub++
	n := d.nextSub
	d.mu.Unlock()

	s := &subscription{
		d:           d,
		dest:        dest,
		visibility:  d.cfg.visibility(),
		maxInFlight: d.cfg.maxInFlight(),
		done:        make(chan struct{}),
		held:        make(map[string]time.Time),
		byID:        make(map[string]*handle),
		changed:     make(chan struct{}),
	}
	if opts.AckWait > 0 {
		s.visibility = max(minVisibility, opts.AckWait.Round(time.Second))
		if s.visibility < opts.AckWait {
			s.visibility += time.Second
		}
		s.visibility = min(s.visibility, maxVisibility)
	}
	if opts.MaxInFlight > 0 {
		s.maxInFlight = opts.MaxInFlight
	}
	var err error
	switch {
	case topicPattern(dest.Pattern) && (opts.Group == "" || dest.Pattern == driver.Broadcast):
		s.private = true
		name := d.cfg.privateQueueName(dest, d.instance+"-"+strconv.Itoa(n))
		var q *resource
		q, s.subARN, err = d.groupQueue(ctx, dest, name, false)
		if q != nil {
			s.queueURL = q.url
		}
		if sel := selection(dest, opts.Select); err == nil && len(sel) > 0 {
			err = d.applySelection(ctx, s.subARN, sel, true)
		}
		d.forget("queue/" + name)
		d.forget("subscription/" + name)
	case topicPattern(dest.Pattern):
		var q *resource
		var subARN string
		q, subARN, err = d.groupQueue(ctx, dest, d.cfg.QueueName(dest, opts.Group), opts.Durable || opts.Group != "")
		if q != nil {
			s.queueURL = q.url
		}
		if err == nil && dest.Pattern == driver.Event {
			// The group's selection is the latest member's, none included.
			err = d.applySelection(ctx, subARN, selection(dest, opts.Select), false)
		}
	default:
		name := d.cfg.QueueName(dest, "")
		var q *resource
		q, err = d.queueWithRedrive(ctx, dest)
		if q != nil {
			s.queueURL = q.url
		}
		if dest.Pattern == driver.Reply {
			// A reply queue belongs to this bus instance alone.
			s.private = true
			d.forget("queue/" + name)
		}
	}
	if err != nil {
		if s.private && s.queueURL != "" {
			s.removePrivate(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("awsbus: subscribe to %q: %w", dest.Name, err)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		if s.private {
			s.removePrivate(ctx)
		}
		return nil, errClosed
	}
	d.subs[s] = struct{}{}
	d.mu.Unlock()

	s.pollCtx, s.pollCancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.poll()
	go s.extend()
	return s, nil
}

// notify wakes everyone waiting on a change; s.mu must be held.
func (s *subscription) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// poll long-polls the queue while there is room, until the subscription
// closes.
func (s *subscription) poll() {
	defer s.wg.Done()
	wait := int32(s.d.cfg.waitTime() / time.Second)
	first := s.firstVisibility()
	backoff := 100 * time.Millisecond
	for {
		s.mu.Lock()
		room := s.maxInFlight - len(s.held)
		changed := s.changed
		s.mu.Unlock()
		if room <= 0 {
			select {
			case <-changed:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case <-s.done:
			return
		default:
		}
		asked := time.Now()
		out, err := s.d.sqs.ReceiveMessage(s.pollCtx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(s.queueURL),
			MaxNumberOfMessages:         int32(min(room, 10)),
			WaitTimeSeconds:             wait,
			VisibilityTimeout:           int32(first / time.Second),
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			if s.pollCtx.Err() != nil {
				return
			}
			s.d.log.Warn("awsbus: receive", "queue", s.queueURL, "err", err)
			select {
			case <-time.After(backoff):
				backoff = min(2*backoff, 5*time.Second)
			case <-s.done:
				return
			}
			continue
		}
		backoff = 100 * time.Millisecond
		if len(out.Messages) == 0 {
			continue
		}
		s.mu.Lock()
		for i := range out.Messages {
			m := &out.Messages[i]
			receipt := aws.ToString(m.ReceiptHandle)
			if h := s.byID[aws.ToString(m.MessageId)]; h != nil {
				// Received again while held: its visibility ran out before
				// the extender renewed it (a stalled process or network).
				// SQS honours the latest receipt handle only; the delivery
				// already held goes on with it, and no second one is made.
				delete(s.held, h.receipt)
				h.receipt = receipt
				s.held[receipt] = asked.Add(first)
				continue
			}
			dl := s.delivery(m)
			if h := dl.Handle.(*handle); h.id != "" {
				s.byID[h.id] = h
			}
			s.buf = append(s.buf, dl)
			s.held[receipt] = asked.Add(first)
		}
		s.notify()
		s.mu.Unlock()
	}
}

func (s *subscription) delivery(m *sqstypes.Message) *driver.Delivery {
	attrs := make(map[string]string, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		if v.StringValue != nil {
			attrs[k] = *v.StringValue
		}
	}
	msg, err := decode(aws.ToString(m.Body), attrs)
	attempt, _ := strconv.Atoi(m.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)])
	return &driver.Delivery{
		Message: msg,
		Attempt: max(attempt, 1),
		Err:     err,
		Handle:  &handle{sub: s, id: aws.ToString(m.MessageId), receipt: aws.ToString(m.ReceiptHandle)},
	}
}

// receiveVisibility bounds the visibility timeout a receive asks for. A
// poll cancelled in flight (a Close whose context ended) may have taken
// messages that nobody sees until it runs out; the extender lengthens it to
// the subscription's full timeout for what did arrive.
const receiveVisibility = 4 * time.Second

func (s *subscription) firstVisibility() time.Duration {
	return min(s.visibility, receiveVisibility)
}

// extend keeps the visibility timeout of every held delivery ahead: a
// delivery whose deadline comes within two ticks gets the full timeout
// again.
func (s *subscription) extend() {
	defer s.wg.Done()
	tick := s.firstVisibility() / 4
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := time.Now()
		s.mu.Lock()
		var receipts []string
		for r, deadline := range s.held {
			if deadline.Sub(now) < 2*tick {
				receipts = append(receipts, r)
				s.held[r] = now.Add(s.visibility)
			}
		}
		s.mu.Unlock()
		if len(receipts) == 0 {
			continue
		}
		// A delivery settled meanwhile makes its entry fail, harmlessly.
		if err := s.changeVisibility(s.pollCtx, receipts, s.visibility, true); err != nil && s.pollCtx.Err() == nil {
			s.d.log.Warn("awsbus: extend visibility", "queue", s.queueURL, "err", err)
		}
	}
}

// Receive implements driver.Subscription.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if max <= 0 {
		max = 1
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errClosed
		}
		if len(s.buf) > 0 {
			n := min(max, len(s.buf))
			out := make([]*driver.Delivery, n)
			copy(out, s.buf)
			s.buf = append(s.buf[:0], s.buf[n:]...)
			s.mu.Unlock()
			return out, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take removes ds from the held set and returns their receipt handles.
func (s *subscription) take(ds []*driver.Delivery) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	receipts := make([]string, 0, len(ds))
	for _, d := range ds {
		h, ok := d.Handle.(*handle)
		if !ok || h.sub != s {
			return nil, fmt.Errorf("awsbus: delivery %v is not of this subscription", d.Handle)
		}
		receipts = append(receipts, h.receipt)
		delete(s.held, h.receipt)
		if s.byID[h.id] == h {
			delete(s.byID, h.id)
		}
	}
	s.notify()
	return receipts, nil
}

// Ack implements driver.Subscription: DeleteMessageBatch, at once.
func (s *subscription) Ack(ctx context.Context, ds []*driver.Delivery) error {
	receipts, err := s.take(ds)
	if err != nil {
		return err
	}
	if err := s.delete(ctx, receipts); err != nil {
		return fmt.Errorf("awsbus: ack on %q: %w", s.dest.Name, err)
	}
	return nil
}

// Term implements driver.Subscription: like Ack, the message is deleted.
func (s *subscription) Term(ctx context.Context, ds []*driver.Delivery) error {
	receipts, err := s.take(ds)
	if err != nil {
		return err
	}
	if err := s.delete(ctx, receipts); err != nil {
		return fmt.Errorf("awsbus: term on %q: %w", s.dest.Name, err)
	}
	return nil
}

// Nack implements driver.Subscription: the visibility timeout becomes the
// delay (rounded up to whole seconds, at most 12 h).
func (s *subscription) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	receipts, err := s.take(ds)
	if err != nil {
		return err
	}
	if delay > 0 {
		delay = min(maxVisibility, (delay + time.Second - 1).Truncate(time.Second))
	} else {
		delay = 0
	}
	if err := s.changeVisibility(ctx, receipts, delay, false); err != nil {
		return fmt.Errorf("awsbus: nack on %q: %w", s.dest.Name, err)
	}
	return nil
}

func (s *subscription) delete(ctx context.Context, receipts []string) error {
	return inTens(receipts, func(lo, hi int) ([]sqstypes.BatchResultErrorEntry, error) {
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, hi-lo)
		for i := lo; i < hi; i++ {
			entries[i-lo] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(receipts[i])}
		}
		out, err := s.d.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.queueURL), Entries: entries})
		if err != nil {
			return nil, err
		}
		return out.Failed, nil
	})
}

// changeVisibility sets the visibility timeout of receipts. With
// gone, an entry refused for a receipt handle SQS no longer honours (the
// message was settled, or received again) is no error.
func (s *subscription) changeVisibility(ctx context.Context, receipts []string, timeout time.Duration, gone bool) error {
	return inTens(receipts, func(lo, hi int) ([]sqstypes.BatchResultErrorEntry, error) {
		entries := make([]sqstypes.ChangeMessageVisibilityBatchRequestEntry, hi-lo)
		for i := lo; i < hi; i++ {
			entries[i-lo] = sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(receipts[i]), VisibilityTimeout: int32(timeout / time.Second),
			}
		}
		out, err := s.d.sqs.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(s.queueURL), Entries: entries})
		if err != nil {
			return nil, err
		}
		if gone {
			return slices.DeleteFunc(out.Failed, func(f sqstypes.BatchResultErrorEntry) bool {
				return aws.ToString(f.Code) == "ReceiptHandleIsInvalid" || aws.ToString(f.Code) == "InvalidParameterValue"
			}), nil
		}
		return out.Failed, nil
	})
}

// inTens calls batch for every ten receipt handles (SQS's batch limit), at
// most four calls at once, and joins the errors of the calls and of their
// refused entries.
func inTens(receipts []string, batch func(lo, hi int) ([]sqstypes.BatchResultErrorEntry, error)) error {
	calls := (len(receipts) + 9) / 10
	errs := make([][]error, calls)
	one := func(i int) {
		lo := i * 10
		failed, err := batch(lo, min(lo+10, len(receipts)))
		if err != nil {
			errs[i] = append(errs[i], classify(err))
			return
		}
		for _, f := range failed {
			errs[i] = append(errs[i], fmt.Errorf("entry %s: %s: %s", aws.ToString(f.Id), aws.ToString(f.Code), aws.ToString(f.Message)))
		}
	}
	if calls <= 1 {
		if calls == 1 {
			one(0)
		}
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for i := range calls {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				one(i)
			})
		}
		wg.Wait()
	}
	var all []error
	for _, e := range errs {
		all = append(all, e...)
	}
	return errors.Join(all...)
}

// Close implements driver.Subscription. It stops polling (waiting for the
// poll in flight, at most Config.WaitTime, unless ctx ends first), gives
// back every delivery it holds with a visibility timeout of zero, and
// removes a private queue.
func (s *subscription) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()

	// The poll in flight may end by itself (what it takes is then held, and
	// given back below). With a deadline, it is cancelled early enough to
	// leave giveBackReserve of it for the give-back.
	stopped := make(chan struct{})
	go func() { s.wg.Wait(); close(stopped) }()
	var early <-chan time.Time
	if deadline, ok := ctx.Deadline(); ok {
		t := time.NewTimer(time.Until(deadline) - giveBackReserve)
		defer t.Stop()
		early = t.C
	}
	select {
	case <-stopped:
	case <-early:
	case <-ctx.Done():
	}
	s.pollCancel()
	<-stopped

	// With ctx over, the give-back still gets a moment: it saves the other
	// members a whole visibility timeout.
	work := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		work, cancel = context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
		defer cancel()
	}
	s.mu.Lock()
	receipts := make([]string, 0, len(s.held))
	for r := range s.held {
		receipts = append(receipts, r)
	}
	s.held, s.buf, s.byID = nil, nil, nil
	s.mu.Unlock()

	var errs []error
	if len(receipts) > 0 && !s.private {
		if err := s.changeVisibility(work, receipts, 0, true); err != nil {
			errs = append(errs, fmt.Errorf("give back %d deliveries: %w", len(receipts), err))
		}
	}
	if s.private {
		if err := s.removePrivate(work); err != nil {
			errs = append(errs, err)
		}
	}
	s.d.mu.Lock()
	delete(s.d.subs, s)
	s.d.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("awsbus: close subscription to %q: %w", s.dest.Name, err)
	}
	return nil
}

// giveBackReserve is the part of a Close's deadline kept for giving back
// what the subscription holds.
const giveBackReserve = 300 * time.Millisecond

// removePrivate deletes a private queue and its SNS subscription.
func (s *subscription) removePrivate(ctx context.Context) error {
	var errs []error
	if s.subARN != "" {
		if _, err := s.d.sns.Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: aws.String(s.subARN)}); err != nil {
			errs = append(errs, fmt.Errorf("unsubscribe: %w", classify(err)))
		}
	}
	if s.queueURL != "" {
		if _, err := s.d.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(s.queueURL)}); err != nil {
			errs = append(errs, fmt.Errorf("delete queue: %w", classify(err)))
		}
	}
	return errors.Join(errs...)
}
