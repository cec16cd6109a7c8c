package awsbus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/marty-msf/eventbus/driver"
)

// Driver is a connection to SNS and SQS in one region. It is safe for
// concurrent use.
type Driver struct {
	cfg       Config
	sns       *sns.Client
	sqs       *sqs.Client
	transport *http.Transport // ours to close; nil with Config.AWSConfig
	log       *slog.Logger
	instance  string

	resMu     sync.Mutex
	resources map[string]*resource

	combiners sync.Map   // topic ARN or queue URL → *combiner
	calls     *callGroup // the combiners' batch calls in flight

	selectMu sync.Mutex // held while a filter policy is read and changed

	mu      sync.Mutex
	closed  bool
	subs    map[*subscription]struct{}
	nextSub int
}

// resource is a topic, queue or SNS subscription created once per driver:
// concurrent users wait for the first, a failure is retried by the next.
type resource struct {
	mu   sync.Mutex
	done bool
	url  string // queue URL
	arn  string // topic, queue or subscription ARN
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.GroupDeclarer = (*Driver)(nil)
)

// Open connects to SNS and SQS as cfg says (nil: every default). It loads
// the AWS configuration and checks nothing on the network: the first
// publish or subscribe does.
func Open(ctx context.Context, cfg *Config) (*Driver, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:       c,
		log:       c.Logger,
		instance:  randomID(),
		resources: make(map[string]*resource),
		subs:      make(map[*subscription]struct{}),
		calls:     newCallGroup(),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	var awsCfg aws.Config
	if c.AWSConfig != nil {
		awsCfg = c.AWSConfig.Copy()
	} else {
		var opts []func(*config.LoadOptions) error
		if c.Region != "" {
			opts = append(opts, config.WithRegion(c.Region))
		}
		if c.Profile != "" {
			opts = append(opts, config.WithSharedConfigProfile(c.Profile))
		}
		if c.AccessKeyID != "" {
			opts = append(opts, config.WithCredentialsProvider(
				credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
		}
		var err error
		awsCfg, err = config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("awsbus: load AWS configuration: %w", driver.RedactError(err, c.SecretAccessKey, c.SessionToken))
		}
		if awsCfg.Region == "" {
			return nil, errors.New("awsbus: no region: set Config.Region, the URL's region or AWS_REGION")
		}
		// The transport the standard configuration built (with its CA
		// bundle, proxies...), owned by this driver so that Close releases
		// its connections.
		if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
			d.transport = bc.GetTransport()
			d.transport.MaxIdleConnsPerHost = 64
			awsCfg.HTTPClient = &http.Client{Transport: d.transport}
		}
	}
	endpoint := c.Endpoint
	d.sns = sns.NewFromConfig(awsCfg, func(o *sns.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	d.sqs = sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return d, nil
}

// SNS returns the driver's SNS client (an escape hatch).
func (d *Driver) SNS() *sns.Client { return d.sns }

// SQS returns the driver's SQS client (an escape hatch).
func (d *Driver) SQS() *sqs.Client { return d.sqs }

// Config returns the driver's configuration (credentials included: do not
// log it).
func (d *Driver) Config() Config { return d.cfg }

// Capabilities implements driver.Driver.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Name:           "aws",
		Durable:        true,
		ConsumerGroups: true,
		// Streams are always FIFO, with the key as message group; events and
		// commands are ordered only with Config.FIFO.
		OrderingByKey: true,
		Redelivery:    true,
		NativeDelay:   true,
		Patterns: []driver.Pattern{
			driver.Event, driver.Command, driver.Query, driver.Stream,
			driver.Broadcast, driver.Reply, driver.DeadLetter,
		},
		MaxMessageSize:  MaxMessageSize,
		AttributeSelect: true,
	}
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

var errClosed = fmt.Errorf("awsbus: %w", driver.ErrClosed)

// Publish implements driver.Driver: it returns once SNS or SQS accepted
// every message (in batches of up to ten), and reports the entries it
// refused.
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if d.isClosed() {
		return errClosed
	}
	if err := checkDestination(dest); err != nil {
		return fmt.Errorf("awsbus: publish: %w", err)
	}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return fmt.Errorf("awsbus: publish to %q: %w", dest.Name, err)
	}
	if err := driver.CheckSize(msgs, MaxMessageSize); err != nil {
		return fmt.Errorf("awsbus: publish to %q: %w", dest.Name, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	wire := make([]*wireMessage, len(msgs))
	for i, m := range msgs {
		w, err := encode(m)
		if err != nil {
			return fmt.Errorf("awsbus: publish to %q: encode %q: %w", dest.Name, m.ID, err)
		}
		if s := w.size(); s > maxWireSize {
			return fmt.Errorf("awsbus: publish to %q: message %q encoded: %w", dest.Name, m.ID, &driver.TooLargeError{Size: s, Limit: maxWireSize})
		}
		wire[i] = w
	}
	fifo := d.cfg.isFIFO(dest)
	var err error
	if topicPattern(dest.Pattern) {
		var topic string
		if dest.Pattern == driver.DeadLetter {
			// What is published before any group subscribes is kept.
			_, err = d.keeper(ctx, dest)
		}
		if err == nil {
			topic, err = d.topic(ctx, dest)
		}
		if err == nil {
			dl := dest.Pattern == driver.DeadLetter
			send := func(ctx context.Context, msgs []*driver.Message, wire []*wireMessage) error {
				return d.publishTopic(ctx, topic, fifo, dl, msgs, wire)
			}
			err = d.publishVia(ctx, "topic/"+topic, topicBatch(fifo), send, msgs, wire)
		}
	} else {
		var q *resource
		if dest.Pattern == driver.Reply {
			q, err = d.existingQueue(ctx, d.cfg.QueueName(dest, ""))
		} else {
			q, err = d.queueWithRedrive(ctx, dest)
		}
		if err == nil {
			url := q.url
			send := func(ctx context.Context, msgs []*driver.Message, wire []*wireMessage) error {
				return d.sendQueue(ctx, url, fifo, msgs, wire)
			}
			key := "queue/" + url
			if dest.Pattern == driver.Reply {
				key = "reply/" + url
			}
			err = d.publishVia(ctx, key, queueBatch, send, msgs, wire)
		}
	}
	if err != nil {
		return fmt.Errorf("awsbus: publish to %q: %w", dest.Name, err)
	}
	return nil
}

// publishVia sends msgs with send: a publish of fewer messages than a
// batch holds goes through the destination's combiner, to share a batch
// call with concurrent callers; a larger one makes its own calls.
//
// Replies make their own calls: each goes to another requester's queue,
// rarely two at once, and a combiner per requester ever answered would
// accumulate.
func (d *Driver) publishVia(ctx context.Context, key string, limit int, send func(context.Context, []*driver.Message, []*wireMessage) error, msgs []*driver.Message, wire []*wireMessage) error {
	if len(msgs) >= limit || strings.HasPrefix(key, "reply/") {
		return send(ctx, msgs, wire)
	}
	return d.combinerFor(key, limit, send).publish(ctx, msgs, wire)
}

// batches splits the messages into SNS/SQS batches: at most limit entries
// and maxWireSize bytes each, in order.
func batches(wire []*wireMessage, limit int, fn func(lo, hi int) error) error {
	lo, size := 0, 0
	for i, w := range wire {
		s := w.size()
		if i > lo && (i-lo == limit || size+s > maxWireSize) {
			if err := fn(lo, i); err != nil {
				return err
			}
			lo, size = i, 0
		}
		size += s
	}
	return fn(lo, len(wire))
}

// groupID is the FIFO message group of m: its key, or its id when it has
// none (no order to keep), hashed when SQS would refuse it as it is. A dead
// letter is a group of its own (byID): a FIFO queue hides a group's later
// messages while its first is received, which would keep a read of the
// dead letters from seeing them.
func groupID(m *driver.Message, byID bool) string {
	g := m.Key
	if g == "" || byID {
		g = m.ID
	}
	if len(g) <= 128 && fifoIDText(g) {
		return g
	}
	return hashID(g)
}

// dedupID is the FIFO de-duplication id of m: a digest of (source, id), so
// that the same id from two sources is two messages, and of
// [driver.Message.DedupParts], so that two groups' dead letters of one
// message are two and a replay is not a repeat of the original publish. The
// destination is implied: every destination has its own topic or queue.
func dedupID(m *driver.Message) string {
	if x := m.DedupParts(); x != "" {
		return hashID(m.Source + "\x00" + m.ID + "\x00" + x)
	}
	return hashID(m.Source + "\x00" + m.ID)
}

func hashID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// fifoIDText reports whether s holds only what a message group id may:
// letters, digits and ASCII punctuation.
func fifoIDText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return s != ""
}

// fifoTopicBatch bounds PublishBatch on FIFO topics. SNS's query protocol
// numbers entries from 1; an implementation that orders them as text (fauxqs
// does: member.10 before member.2) would reorder a batch of ten.
const fifoTopicBatch = 9

// queueBatch bounds SendMessageBatch (SQS's limit), and PublishBatch on
// standard topics.
const queueBatch = 10

func topicBatch(fifo bool) int {
	if fifo {
		return fifoTopicBatch
	}
	return queueBatch
}

func (d *Driver) publishTopic(ctx context.Context, topic string, fifo, dl bool, msgs []*driver.Message, wire []*wireMessage) error {
	return batches(wire, topicBatch(fifo), func(lo, hi int) error {
		entries := make([]snstypes.PublishBatchRequestEntry, 0, hi-lo)
		for i := lo; i < hi; i++ {
			w := wire[i]
			attrs := make(map[string]snstypes.MessageAttributeValue, len(w.attrs))
			for _, a := range w.attrs {
				attrs[a.name] = snstypes.MessageAttributeValue{DataType: aws.String(stringType), StringValue: aws.String(a.value)}
			}
			e := snstypes.PublishBatchRequestEntry{
				Id:                aws.String(strconv.Itoa(i)),
				Message:           aws.String(w.body),
				MessageAttributes: attrs,
			}
			if fifo {
				e.MessageGroupId = aws.String(groupID(msgs[i], dl))
				if !d.cfg.ContentBasedDeduplication {
					e.MessageDeduplicationId = aws.String(dedupID(msgs[i]))
				}
			}
			entries = append(entries, e)
		}
		out, err := d.sns.PublishBatch(ctx, &sns.PublishBatchInput{TopicArn: aws.String(topic), PublishBatchRequestEntries: entries})
		if err != nil {
			return classify(err)
		}
		return batchFailures(len(entries), len(out.Failed), func(i int) (string, string, string) {
			f := out.Failed[i]
			return aws.ToString(f.Id), aws.ToString(f.Code), aws.ToString(f.Message)
		}, msgs)
	})
}

func (d *Driver) sendQueue(ctx context.Context, url string, fifo bool, msgs []*driver.Message, wire []*wireMessage) error {
	return batches(wire, queueBatch, func(lo, hi int) error {
		entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, hi-lo)
		for i := lo; i < hi; i++ {
			w := wire[i]
			attrs := make(map[string]sqstypes.MessageAttributeValue, len(w.attrs))
			for _, a := range w.attrs {
				attrs[a.name] = sqstypes.MessageAttributeValue{DataType: aws.String(stringType), StringValue: aws.String(a.value)}
			}
			e := sqstypes.SendMessageBatchRequestEntry{
				Id:                aws.String(strconv.Itoa(i)),
				MessageBody:       aws.String(w.body),
				MessageAttributes: attrs,
			}
			if fifo {
				e.MessageGroupId = aws.String(groupID(msgs[i], false))
				if !d.cfg.ContentBasedDeduplication {
					e.MessageDeduplicationId = aws.String(dedupID(msgs[i]))
				}
			}
			entries = append(entries, e)
		}
		out, err := d.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			return classify(err)
		}
		return batchFailures(len(entries), len(out.Failed), func(i int) (string, string, string) {
			f := out.Failed[i]
			return aws.ToString(f.Id), aws.ToString(f.Code), aws.ToString(f.Message)
		}, msgs)
	})
}

// BatchError reports the entries of a batch that SNS or SQS refused; the
// other entries were accepted.
type BatchError struct {
	Sent   int
	Failed []EntryError
}

// EntryError is one refused entry of a batch.
type EntryError struct {
	ID      string // the message's id
	Code    string
	Message string

	index int // in the messages of the batch call; -1 unknown
}

func (e *BatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d messages refused", len(e.Failed), e.Sent)
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Failed)-i)
			break
		}
		fmt.Fprintf(&b, "; %q: %s: %s", f.ID, f.Code, f.Message)
	}
	return b.String()
}

func batchFailures(sent, failed int, entry func(int) (id, code, msg string), msgs []*driver.Message) error {
	if failed == 0 {
		return nil
	}
	e := &BatchError{Sent: sent}
	for i := range failed {
		id, code, msg := entry(i)
		index := -1
		if n, err := strconv.Atoi(id); err == nil && n >= 0 && n < len(msgs) {
			id, index = msgs[n].ID, n
		}
		e.Failed = append(e.Failed, EntryError{ID: id, Code: code, Message: msg, index: index})
	}
	return e
}

// unavailableError marks an error of the network (no API answer) as
// driver.ErrUnavailable, keeping the SDK's error underneath.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return e.err.Error() }
func (e *unavailableError) Unwrap() error        { return e.err }
func (e *unavailableError) Is(target error) bool { return target == driver.ErrUnavailable }

// classify marks errors that carry no API answer (connection refused, reset,
// timeouts of the transport) as driver.ErrUnavailable.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return err
	}
	return &unavailableError{err}
}

func apiCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// get returns the resource cached under key, creating it with create when no
// earlier call succeeded.
func (d *Driver) get(key string, create func(r *resource) error) (*resource, error) {
	d.resMu.Lock()
	r := d.resources[key]
	if r == nil {
		r = &resource{}
		d.resources[key] = r
	}
	d.resMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return r, nil
	}
	if err := create(r); err != nil {
		return nil, err
	}
	r.done = true
	return r, nil
}

func (d *Driver) forget(key string) {
	d.resMu.Lock()
	delete(d.resources, key)
	d.resMu.Unlock()
}

// topic creates dest's SNS topic (idempotent on SNS) and returns its ARN.
func (d *Driver) topic(ctx context.Context, dest driver.Destination) (string, error) {
	name := d.cfg.TopicName(dest)
	r, err := d.get("topic/"+name, func(r *resource) error {
		attrs := map[string]string{}
		if d.cfg.isFIFO(dest) {
			attrs["FifoTopic"] = "true"
			if d.cfg.ContentBasedDeduplication {
				attrs["ContentBasedDeduplication"] = "true"
			}
		}
		if d.cfg.KMSKeyID != "" {
			attrs["KmsMasterKeyId"] = d.cfg.KMSKeyID
		}
		out, err := d.sns.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name), Attributes: attrs})
		if err != nil {
			return fmt.Errorf("create topic %s: %w", name, classify(err))
		}
		r.arn = aws.ToString(out.TopicArn)
		return nil
	})
	if err != nil {
		return "", err
	}
	return r.arn, nil
}

// queue creates the queue name for dest (idempotent) and returns its URL and
// ARN. topicARN, when set, is the topic allowed to send to it; dlq, when
// set, the ARN of its redrive target.
func (d *Driver) queue(ctx context.Context, dest driver.Destination, name, topicARN, dlq string) (*resource, error) {
	return d.get("queue/"+name, func(r *resource) error {
		attrs := map[string]string{
			"VisibilityTimeout": strconv.Itoa(int(d.cfg.visibility() / time.Second)),
		}
		if d.cfg.isFIFO(dest) {
			attrs["FifoQueue"] = "true"
			if d.cfg.ContentBasedDeduplication {
				attrs["ContentBasedDeduplication"] = "true"
			}
		}
		if d.cfg.KMSKeyID != "" {
			attrs["KmsMasterKeyId"] = d.cfg.KMSKeyID
		}
		if d.cfg.Retention > 0 {
			attrs["MessageRetentionPeriod"] = strconv.Itoa(int(d.cfg.Retention / time.Second))
		}
		if topicARN != "" {
			attrs["Policy"] = queuePolicy(topicARN, queueARNFor(topicARN, name))
		}
		if dlq != "" {
			rp, _ := json.Marshal(map[string]any{"deadLetterTargetArn": dlq, "maxReceiveCount": d.cfg.MaxReceiveCount})
			attrs["RedrivePolicy"] = string(rp)
		}
		in := &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs}
		if dest.Pattern == driver.DeadLetter && len(dest.Name) <= maxTagValue {
			in.Tags = map[string]string{destinationTag: dest.Name}
		}
		out, err := d.sqs.CreateQueue(ctx, in)
		if err != nil {
			if apiCode(err) != "QueueAlreadyExists" && apiCode(err) != "QueueNameExists" {
				return fmt.Errorf("create queue %s: %w", name, classify(err))
			}
			// Created earlier with other settings: use it as it is.
			d.log.Warn("awsbus: queue exists with other attributes; using it as it is", "queue", name)
			got, gerr := d.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
			if gerr != nil {
				return fmt.Errorf("queue %s: %w", name, classify(gerr))
			}
			out = &sqs.CreateQueueOutput{QueueUrl: got.QueueUrl}
		}
		r.url = aws.ToString(out.QueueUrl)
		return d.fillQueueARN(ctx, r)
	})
}

// queueWithRedrive creates the queue of a queue-based destination (commands,
// queries) with, given Config.MaxReceiveCount, its redrive policy to the
// keeper queue of its dead-letter destination.
func (d *Driver) queueWithRedrive(ctx context.Context, dest driver.Destination) (*resource, error) {
	var dlq string
	if d.cfg.MaxReceiveCount > 0 && (dest.Pattern == driver.Command || dest.Pattern == driver.Query) {
		r, err := d.keeper(ctx, driver.DeadLetterOf(dest))
		if err != nil {
			return nil, err
		}
		dlq = r.arn
	}
	return d.queue(ctx, dest, d.cfg.QueueName(dest, ""), "", dlq)
}

// existingQueue looks up a queue without creating it (a reply queue belongs
// to its requester: if it is gone, so is the reply).
func (d *Driver) existingQueue(ctx context.Context, name string) (*resource, error) {
	return d.get("queue/"+name, func(r *resource) error {
		out, err := d.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("queue %s: %w", name, classify(err))
		}
		r.url = aws.ToString(out.QueueUrl)
		return nil
	})
}

func (d *Driver) fillQueueARN(ctx context.Context, r *resource) error {
	out, err := d.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(r.url), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return fmt.Errorf("queue %s: %w", r.url, classify(err))
	}
	r.arn = out.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
	return nil
}

// queueARNFor derives a queue's ARN from its topic's: same partition,
// region and account.
func queueARNFor(topicARN, queue string) string {
	parts := strings.Split(topicARN, ":")
	if len(parts) < 6 {
		return "*"
	}
	return strings.Join([]string{parts[0], parts[1], "sqs", parts[3], parts[4], queue}, ":")
}

// queuePolicy lets topic (and nothing else) send to queue.
func queuePolicy(topic, queue string) string {
	p, _ := json.Marshal(map[string]any{
		"Version": "2012-10-17",
		"Statement": []any{map[string]any{
			"Sid":       "eventbus-topic",
			"Effect":    "Allow",
			"Principal": map[string]string{"Service": "sns.amazonaws.com"},
			"Action":    "sqs:SendMessage",
			"Resource":  queue,
			"Condition": map[string]any{"ArnEquals": map[string]string{"aws:SourceArn": topic}},
		}},
	})
	return string(p)
}

// groupQueue creates (idempotently) what a group of a topic-based
// destination consumes: the topic, the group's queue with its policy (and
// redrive policy), and the topic's raw-delivery subscription to it.
func (d *Driver) groupQueue(ctx context.Context, dest driver.Destination, name string, durable bool) (q *resource, subARN string, err error) {
	topic, err := d.topic(ctx, dest)
	if err != nil {
		return nil, "", err
	}
	var dlq string
	if dest.Pattern == driver.DeadLetter {
		// What the topic gets is kept, whether or not groups consume it.
		if _, err := d.keeper(ctx, dest); err != nil {
			return nil, "", err
		}
	} else if durable && d.cfg.MaxReceiveCount > 0 {
		r, err := d.keeper(ctx, driver.DeadLetterOf(dest))
		if err != nil {
			return nil, "", err
		}
		dlq = r.arn
	}
	q, err = d.queue(ctx, dest, name, topic, dlq)
	if err != nil {
		return nil, "", err
	}
	subARN, err = d.subscribeQueue(ctx, topic, name, q)
	if err != nil {
		return nil, "", err
	}
	return q, subARN, nil
}

// subscribeQueue subscribes the queue q (named name) to topic with raw
// message delivery, once per driver (SNS's Subscribe is idempotent too),
// and returns the subscription's ARN.
func (d *Driver) subscribeQueue(ctx context.Context, topic, name string, q *resource) (string, error) {
	s, err := d.get("subscription/"+name, func(r *resource) error {
		out, err := d.sns.Subscribe(ctx, &sns.SubscribeInput{
			TopicArn:              aws.String(topic),
			Protocol:              aws.String("sqs"),
			Endpoint:              aws.String(q.arn),
			Attributes:            map[string]string{"RawMessageDelivery": "true"},
			ReturnSubscriptionArn: true,
		})
		if err != nil && apiCode(err) == "InvalidParameter" && strings.Contains(err.Error(), "already exists") {
			// Subscribed earlier with other attributes: a filter policy
			// (see Attribute selection), which the caller sets, or no raw
			// message delivery, which is set here.
			arn, lerr := d.findSubscription(ctx, topic, q.arn)
			if lerr == nil && arn != "" {
				lerr = d.ensureRawDelivery(ctx, arn)
			}
			if lerr != nil {
				return fmt.Errorf("subscribe queue %s to topic %s: %w", name, topic, lerr)
			}
			if arn != "" {
				r.arn = arn
				return nil
			}
		}
		if err != nil {
			return fmt.Errorf("subscribe queue %s to topic %s: %w", name, topic, classify(err))
		}
		r.arn = aws.ToString(out.SubscriptionArn)
		return nil
	})
	if err != nil {
		return "", err
	}
	return s.arn, nil
}

// findSubscription returns the ARN of the SQS subscription of the queue
// queueARN to topic, "" when there is none.
func (d *Driver) findSubscription(ctx context.Context, topic, queueARN string) (string, error) {
	pages := sns.NewListSubscriptionsByTopicPaginator(d.sns, &sns.ListSubscriptionsByTopicInput{TopicArn: aws.String(topic)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return "", classify(err)
		}
		for _, s := range page.Subscriptions {
			if aws.ToString(s.Protocol) == "sqs" && aws.ToString(s.Endpoint) == queueARN {
				return aws.ToString(s.SubscriptionArn), nil
			}
		}
	}
	return "", nil
}

// ensureRawDelivery turns on raw message delivery on the existing SNS
// subscription subARN when it is off: the queue would otherwise get SNS's
// JSON notifications, which the driver does not read.
func (d *Driver) ensureRawDelivery(ctx context.Context, subARN string) error {
	out, err := d.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: aws.String(subARN)})
	if err != nil {
		return fmt.Errorf("read the attributes of the existing subscription %s: %w", subARN, classify(err))
	}
	if out.Attributes["RawMessageDelivery"] == "true" {
		return nil
	}
	if _, err := d.sns.SetSubscriptionAttributes(ctx, &sns.SetSubscriptionAttributesInput{
		SubscriptionArn: aws.String(subARN), AttributeName: aws.String("RawMessageDelivery"), AttributeValue: aws.String("true"),
	}); err != nil {
		return fmt.Errorf("the existing subscription %s has no raw message delivery, and turning it on failed: %w", subARN, classify(err))
	}
	d.log.Warn("awsbus: turned on raw message delivery on an existing SNS subscription", "subscription", subARN)
	return nil
}

// QueueURL creates (idempotently) the queue that a subscription of group to
// dest consumes, with everything behind it, and returns its URL: an escape
// hatch to inspect or redrive it with the SQS client.
func (d *Driver) QueueURL(ctx context.Context, dest driver.Destination, group string) (string, error) {
	if err := checkDestination(dest); err != nil {
		return "", fmt.Errorf("awsbus: %w", err)
	}
	name := d.cfg.QueueName(dest, group)
	var q *resource
	var err error
	if topicPattern(dest.Pattern) {
		q, _, err = d.groupQueue(ctx, dest, name, true)
	} else {
		q, err = d.queueWithRedrive(ctx, dest)
	}
	if err != nil {
		return "", fmt.Errorf("awsbus: %w", err)
	}
	return q.url, nil
}

// TopicARN creates (idempotently) the SNS topic of a topic-based
// destination and returns its ARN.
func (d *Driver) TopicARN(ctx context.Context, dest driver.Destination) (string, error) {
	if err := checkDestination(dest); err != nil {
		return "", fmt.Errorf("awsbus: %w", err)
	}
	if !topicPattern(dest.Pattern) {
		return "", fmt.Errorf("awsbus: %s destinations are queues, not topics: %w", dest.Pattern, driver.ErrUnsupported)
	}
	arn, err := d.topic(ctx, dest)
	if err != nil {
		return "", fmt.Errorf("awsbus: %w", err)
	}
	return arn, nil
}

// DeclareGroup implements driver.GroupDeclarer: it creates the group's queue
// and its subscription to the destination's topic (for commands, the
// destination's queue), so that what is published from now on is kept for
// the group.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if d.isClosed() {
		return errClosed
	}
	if opts.Group == "" {
		return fmt.Errorf("awsbus: declare group on %q: empty group name", dest.Name)
	}
	if _, err := d.QueueURL(ctx, dest, opts.Group); err != nil {
		return fmt.Errorf("awsbus: declare group %q on %q: %w", opts.Group, dest.Name, errors.Unwrap(err))
	}
	return nil
}

// Close implements driver.Driver: it closes every subscription (giving back
// what they hold and removing private queues), waits for the batch calls
// that concurrent Publish calls share and that are still running for
// callers that wait for them (when ctx ends first, it cancels them, waits
// for them to return and reports ctx's error), then closes the connection.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	subs := make([]*subscription, 0, len(d.subs))
	for s := range d.subs {
		subs = append(subs, s)
	}
	d.mu.Unlock()
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Go(func() { errs[i] = s.Close(ctx) })
	}
	wg.Wait()
	if err := d.calls.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("awsbus: close: batch calls cancelled: %w", err))
	}
	if d.transport != nil {
		d.transport.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
