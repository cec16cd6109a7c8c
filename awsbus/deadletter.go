package awsbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// A dead-letter destination is an SNS topic, like an event type, with one
// queue that keeps its messages: the keeper queue, subscribed to the topic
// (raw delivery) as soon as anything publishes to or subscribes to the
// destination, and the target of the redrive policies of its origin's
// queues. Groups subscribed to the destination get queues of their own, so
// that reading and removing dead letters through driver.DeadLetterStore
// never takes a message from a consumer, nor a consumer from the keeper.
//
// SQS has no way to look at a queue's messages without receiving them.
// Reading receives every message of the keeper queue with a visibility
// timeout of its own (deadLetterHold), keeps them in memory, and makes them
// visible again (visibility 0) before it calls fn: while a read runs, what
// it received is hidden from every other reader of the keeper queue (a
// second console reading at the same time sees only what the first has not
// taken yet), and a process that dies in the middle of a read hides them
// until deadLetterHold passes (a read that lasts longer than half of it
// renews its hold). Every read adds one to the messages'
// ApproximateReceiveCount. A Ref is the SQS message id, which stays the same
// across receives (and across a redrive from the origin's queue).

// deadLetterHold is the visibility timeout of the messages a read holds;
// they are given back as soon as the read has them all.
const deadLetterHold = 60 * time.Second

// destinationTag is the queue tag that names a keeper queue's logical
// destination (queue names are cut and hashed; the tag is exact).
// A destination whose name is longer than an SQS tag value allows is not
// listed (its queue works all the same).
const (
	destinationTag = "eventbus-destination"
	maxTagValue    = 256
)

// keeperName is the name of the queue that keeps dl's messages.
func (c *Config) keeperName(dl driver.Destination) string {
	return resourceName(c.prefix(), "k", c.isFIFO(dl), dl.Name)
}

// keeper creates (idempotently) dl's topic, its keeper queue and the
// queue's subscription, and returns the queue.
func (d *Driver) keeper(ctx context.Context, dl driver.Destination) (*resource, error) {
	topic, err := d.topic(ctx, dl)
	if err != nil {
		return nil, err
	}
	name := d.cfg.keeperName(dl)
	q, err := d.queue(ctx, dl, name, topic, "")
	if err != nil {
		return nil, err
	}
	if _, err := d.subscribeQueue(ctx, topic, name, q); err != nil {
		return nil, err
	}
	return q, nil
}

// DeadLetterQueueURL creates (idempotently) the queue that keeps the
// messages of the dead-letter destination dl, with its topic, and returns
// its URL: an escape hatch to inspect it with the SQS client, or to move
// its messages elsewhere with SQS's own redrive.
func (d *Driver) DeadLetterQueueURL(ctx context.Context, dl driver.Destination) (string, error) {
	if err := checkDeadLetter(dl); err != nil {
		return "", err
	}
	q, err := d.keeper(ctx, dl)
	if err != nil {
		return "", fmt.Errorf("awsbus: %w", err)
	}
	return q.url, nil
}

func checkDeadLetter(dl driver.Destination) error {
	if dl.Pattern != driver.DeadLetter {
		return fmt.Errorf("awsbus: %q is a %s destination, not a dead-letter one: %w", dl.Name, dl.Pattern, driver.ErrUnsupported)
	}
	if err := checkDestination(dl); err != nil {
		return fmt.Errorf("awsbus: %w", err)
	}
	return nil
}

// DeadLetterDestinations implements driver.DeadLetterStore: the keeper
// queues under the driver's prefix, whoever created them, by their
// destination tag.
func (d *Driver) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	if d.isClosed() {
		return nil, errClosed
	}
	var out []driver.Destination
	pages := sqs.NewListQueuesPaginator(d.sqs, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(d.cfg.prefix() + "-k-")})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("awsbus: list dead-letter queues: %w", classify(err))
		}
		for _, u := range page.QueueUrls {
			tags, err := d.sqs.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: aws.String(u)})
			if err != nil {
				if isMissingQueue(err) {
					continue
				}
				return nil, fmt.Errorf("awsbus: list dead-letter queues: tags of %s: %w", u, classify(err))
			}
			name := tags.Tags[destinationTag]
			dl := driver.Destination{Pattern: driver.DeadLetter, Name: name}
			if checkDestination(dl) != nil || !strings.HasSuffix(u, "/"+d.cfg.keeperName(dl)) {
				continue // not ours, or tagged by hand
			}
			out = append(out, dl)
		}
	}
	slices.SortFunc(out, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return slices.Compact(out), nil
}

// held is one message of a keeper queue, received by a read.
type held struct {
	id      string
	receipt string
	seq     string // FIFO sequence number
	sent    int64  // SentTimestamp, ms
	msg     *sqstypes.Message
}

// HiddenDeadLettersError reports that a read of a FIFO keeper queue did not
// receive all of its messages: messages that SQS's redrive policy moved
// there from a FIFO queue keep their message group, and SQS returns none of
// a group's later messages while its first ones are held by the read.
// ReadDeadLetters returns it after passing on what it read;
// PurgeDeadLetters and DeleteDeadLetters read the queue again after each
// deletion (which uncovers the next messages of the groups) and return it
// only for named messages that stayed out of reach.
type HiddenDeadLettersError struct {
	Destination string // the dead-letter destination's name
	Read        int    // messages read
	Hidden      int    // messages SQS counted as left (ApproximateNumberOfMessages)
}

func (e *HiddenDeadLettersError) Error() string {
	return fmt.Sprintf("awsbus: dead letters of %q: read %d, about %d more are hidden behind the first messages of their FIFO message groups "+
		"(redriven by SQS with their group); PurgeDeadLetters removes them all, or move them with the queue's URL (DeadLetterQueueURL)",
		e.Destination, e.Read, e.Hidden)
}

// holdAll receives every message of the keeper queue of dl with the
// visibility timeout deadLetterHold and returns them oldest first (by FIFO
// sequence number, then by the time SQS stored them, then in the order
// received), with the queue's URL. The caller gives them back or deletes
// them. A queue that does not exist holds nothing. On a FIFO keeper queue,
// hidden is what SQS still counts as visible while the read holds what it
// received: the later messages of the message groups it holds (see
// HiddenDeadLettersError), and any stored during the read.
func (d *Driver) holdAll(ctx context.Context, dl driver.Destination) (url string, out []held, hidden int, err error) {
	if d.isClosed() {
		return "", nil, 0, errClosed
	}
	if err := checkDeadLetter(dl); err != nil {
		return "", nil, 0, err
	}
	got, err := d.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(d.cfg.keeperName(dl))})
	if err != nil {
		if isMissingQueue(err) {
			return "", nil, 0, nil
		}
		return "", nil, 0, fmt.Errorf("awsbus: dead letters of %q: %w", dl.Name, classify(err))
	}
	url = aws.ToString(got.QueueUrl)
	want, err := d.visibleCount(ctx, url)
	if err != nil {
		return "", nil, 0, fmt.Errorf("awsbus: dead letters of %q: %w", dl.Name, classify(err))
	}
	seen := map[string]int{} // message id → index in out
	renewed := time.Now()
	for longPolled := false; ; {
		if time.Since(renewed) > deadLetterHold/2 {
			// A long read renews what it holds, so that nothing it has
			// read becomes visible (and is read twice) before it ends.
			if err := d.setVisibility(ctx, url, out, deadLetterHold); err != nil {
				d.log.Warn("awsbus: extend the visibility of dead letters", "queue", url, "err", err)
			}
			renewed = time.Now()
		}
		// Short polls while the count SQS gave says more are there; one
		// long poll (which asks every SQS server) before concluding that
		// the queue is empty, once: messages that keep arriving do not
		// keep the read going.
		wait := int32(0)
		if len(out) >= want {
			if longPolled {
				break
			}
			wait, longPolled = 1, true
		}
		res, err := d.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(url),
			MaxNumberOfMessages:   10,
			WaitTimeSeconds:       wait,
			VisibilityTimeout:     int32(deadLetterHold / time.Second),
			MessageAttributeNames: []string{"All"},
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{
				sqstypes.MessageSystemAttributeNameSentTimestamp, sqstypes.MessageSystemAttributeNameSequenceNumber,
			},
		})
		if err != nil {
			d.giveBack(url, out)
			return "", nil, 0, fmt.Errorf("awsbus: dead letters of %q: %w", dl.Name, classify(err))
		}
		if len(res.Messages) == 0 {
			if wait > 0 {
				break
			}
			want = len(out) // the count was stale (or a short poll missed some)
			continue
		}
		for i := range res.Messages {
			m := &res.Messages[i]
			h := held{id: aws.ToString(m.MessageId), receipt: aws.ToString(m.ReceiptHandle), msg: m}
			if at, ok := seen[h.id]; ok {
				// The same message again (SQS's at-least-once receive, or
				// its visibility ran out): SQS honours the latest receipt
				// handle only, for deletion as for visibility.
				out[at].receipt = h.receipt
				continue
			}
			seen[h.id] = len(out)
			h.seq = m.Attributes[string(sqstypes.MessageSystemAttributeNameSequenceNumber)]
			h.sent, _ = strconv.ParseInt(m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64)
			out = append(out, h)
		}
		if wait > 0 {
			// The count was stale: read on until a short poll is empty.
			want = max(want, len(out)+1)
		}
	}
	slices.SortStableFunc(out, func(a, b held) int {
		if a.seq != b.seq { // decimal numbers of up to 128 bits
			if c := cmp.Compare(len(a.seq), len(b.seq)); c != 0 {
				return c
			}
			return strings.Compare(a.seq, b.seq)
		}
		return cmp.Compare(a.sent, b.sent)
	})
	if d.cfg.isFIFO(dl) && len(out) > 0 {
		if hidden, err = d.visibleCount(ctx, url); err != nil {
			d.giveBack(url, out)
			return "", nil, 0, fmt.Errorf("awsbus: dead letters of %q: %w", dl.Name, classify(err))
		}
	}
	return url, out, hidden, nil
}

// visibleCount is SQS's ApproximateNumberOfMessages of the queue at url.
func (d *Driver) visibleCount(ctx context.Context, url string) (int, error) {
	attrs, err := d.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages},
	})
	if err != nil {
		return 0, err
	}
	n, _ := strconv.Atoi(attrs.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	return n, nil
}

// giveBack makes hs visible again at once, on a context of its own (a read
// cancelled by its caller must still give back what it took).
func (d *Driver) giveBack(url string, hs []held) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.setVisibility(ctx, url, hs, 0)
}

// setVisibility sets the visibility timeout of hs.
func (d *Driver) setVisibility(ctx context.Context, url string, hs []held, timeout time.Duration) error {
	if len(hs) == 0 {
		return nil
	}
	receipts := make([]string, len(hs))
	for i, h := range hs {
		receipts[i] = h.receipt
	}
	return inTens(receipts, func(lo, hi int) ([]sqstypes.BatchResultErrorEntry, error) {
		entries := make([]sqstypes.ChangeMessageVisibilityBatchRequestEntry, hi-lo)
		for i := lo; i < hi; i++ {
			entries[i-lo] = sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(receipts[i]), VisibilityTimeout: int32(timeout / time.Second),
			}
		}
		out, err := d.sqs.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			return nil, err
		}
		return out.Failed, nil
	})
}

// remove deletes hs from the queue and counts those SQS removed.
func (d *Driver) remove(ctx context.Context, url string, hs []held) (int, error) {
	receipts := make([]string, len(hs))
	for i, h := range hs {
		receipts[i] = h.receipt
	}
	var removed atomic.Int64
	err := inTens(receipts, func(lo, hi int) ([]sqstypes.BatchResultErrorEntry, error) {
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, hi-lo)
		for i := lo; i < hi; i++ {
			entries[i-lo] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(receipts[i])}
		}
		out, err := d.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			return nil, err
		}
		removed.Add(int64(len(out.Successful)))
		return out.Failed, nil
	})
	return int(removed.Load()), err
}

// ReadDeadLetters implements driver.DeadLetterStore (see the comment at the
// top of this file for how SQS is browsed). On a FIFO keeper queue whose
// reading left messages out of reach, it returns a *HiddenDeadLettersError
// after passing on what it read.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	url, hs, hidden, err := d.holdAll(ctx, dl)
	if err != nil {
		return err
	}
	if err := d.giveBack(url, hs); err != nil {
		return fmt.Errorf("awsbus: dead letters of %q: give back: %w", dl.Name, err)
	}
	for _, h := range hs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		attrs := make(map[string]string, len(h.msg.MessageAttributes))
		for k, v := range h.msg.MessageAttributes {
			if v.StringValue != nil {
				attrs[k] = *v.StringValue
			}
		}
		// A body that is no envelope comes with its raw body as Data
		// (decode's promise), and is passed on all the same.
		m, _ := decode(aws.ToString(h.msg.Body), attrs)
		if !fn(driver.DeadLetterEntry{Ref: h.id, Message: m}) {
			return nil
		}
	}
	if hidden > 0 {
		return &HiddenDeadLettersError{Destination: dl.Name, Read: len(hs), Hidden: hidden}
	}
	return nil
}

// DeleteDeadLetters implements driver.DeadLetterStore: it receives the
// queue's messages, deletes those named by refs and gives back the others;
// on a FIFO keeper queue that hides messages behind the first of their
// groups, it reads again while deleting uncovers more, and returns a
// *HiddenDeadLettersError when refs it did not find may be hidden.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	if len(refs) == 0 {
		if err := checkDeadLetter(dl); err != nil {
			return 0, err
		}
		return 0, nil
	}
	want := make(map[string]bool, len(refs))
	for _, r := range refs {
		want[r] = true
	}
	total := 0
	for {
		url, hs, hidden, err := d.holdAll(ctx, dl)
		if err != nil {
			return total, err
		}
		var gone, kept []held
		for _, h := range hs {
			if want[h.id] {
				gone = append(gone, h)
				delete(want, h.id)
			} else {
				kept = append(kept, h)
			}
		}
		n, err := d.remove(ctx, url, gone)
		total += n
		if gerr := d.giveBack(url, kept); gerr != nil {
			err = errors.Join(err, fmt.Errorf("give back: %w", gerr))
		}
		if err != nil {
			return total, fmt.Errorf("awsbus: delete dead letters of %q: %w", dl.Name, err)
		}
		if len(want) == 0 || hidden == 0 {
			return total, nil
		}
		if len(gone) == 0 {
			return total, &HiddenDeadLettersError{Destination: dl.Name, Read: len(hs), Hidden: hidden}
		}
	}
}

// PurgeDeadLetters implements driver.DeadLetterStore: it receives and
// deletes every message of the queue, to count them (SQS's PurgeQueue
// counts nothing, may take a minute, and runs once a minute at most); on a
// FIFO keeper queue, again while deleting uncovers the later messages of
// their groups.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	total := 0
	for {
		url, hs, hidden, err := d.holdAll(ctx, dl)
		if err != nil {
			return total, err
		}
		n, err := d.remove(ctx, url, hs)
		total += n
		if err != nil {
			return total, fmt.Errorf("awsbus: purge dead letters of %q: %w", dl.Name, err)
		}
		if hidden == 0 || n == 0 {
			return total, nil
		}
	}
}

func isMissingQueue(err error) bool {
	switch apiCode(err) {
	case "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist":
		return true
	}
	return false
}
