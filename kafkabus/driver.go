package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver"
)

// Driver is a connection to one Kafka cluster: one producing client shared by
// every publish, and one consuming client per subscription. It implements
// driver.Driver and driver.GroupDeclarer.
type Driver struct {
	cfg      Config
	baseOpts []kgo.Opt
	client   *kgo.Client
	admin    *kadm.Client
	caps     driver.Capabilities

	topicsMu    sync.Mutex
	topics      map[string]*topicState
	deadLetters map[string]string // dead-letter destination name → topic, published to

	mu     sync.Mutex
	closed bool
	subs   map[*subscription]struct{}
	done   chan struct{}
}

// topicState is the creation of one topic, done once per driver.
type topicState struct {
	once chan struct{}
	err  error
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.GroupDeclarer = (*Driver)(nil)
)

// Open connects to the cluster that cfg describes and checks that a broker
// answers. A nil cfg means the defaults.
func Open(ctx context.Context, cfg *Config) (*Driver, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, err := cfg.clientOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(append(base[:len(base):len(base)], cfg.Options.producerOpts()...), kgo.WithContext(context.WithoutCancel(ctx)))...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: %w", err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafkabus: reach brokers %s: %w: %w", strings.Join(cfg.brokers(), ","), driver.ErrUnavailable, err)
	}
	d := &Driver{
		cfg:         *cfg,
		baseOpts:    base,
		client:      cl,
		admin:       kadm.NewClient(cl),
		topics:      map[string]*topicState{},
		deadLetters: map[string]string{},
		subs:        map[*subscription]struct{}{},
		done:        make(chan struct{}),
	}
	d.caps = driver.Capabilities{
		Name:           "kafka",
		Durable:        true,
		ConsumerGroups: true,
		OrderingByKey:  true,
		Redelivery:     true,
		Patterns: []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Stream,
			driver.Broadcast, driver.Reply, driver.DeadLetter},
		MaxMessageSize: cfg.Options.maxMessageSize(),
	}
	return d, nil
}

// Capabilities reports what the driver does; see the package documentation.
func (d *Driver) Capabilities() driver.Capabilities { return d.caps }

// Client returns the producing client, for what the driver does not cover.
// Closing the driver closes it.
func (d *Driver) Client() *kgo.Client { return d.client }

// Admin returns an admin client on the producing client.
func (d *Driver) Admin() *kadm.Client { return d.admin }

// Topic returns the Kafka topic of a logical destination.
func (d *Driver) Topic(dest driver.Destination) string {
	return topicName(d.cfg.TopicPrefix, dest.Name)
}

// GroupID returns the Kafka consumer group id of a group on a destination:
// a Kafka group consumes one topic here, so the topic is part of its id.
func (d *Driver) GroupID(dest driver.Destination, group string) string {
	return d.cfg.GroupPrefix + group + "." + d.Topic(dest)
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

func (d *Driver) checkDest(dest driver.Destination) error {
	if !d.caps.Serves(dest.Pattern) {
		return fmt.Errorf("kafkabus: pattern %s: %w", dest.Pattern, driver.ErrUnsupported)
	}
	if dest.Name == "" {
		return errors.New("kafkabus: empty destination name")
	}
	return nil
}

// Publish produces msgs to dest's topic and returns once the brokers
// acknowledged every record with the configured acks. The records of one
// call are produced concurrently, and concurrent calls share batches.
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if d.isClosed() {
		return fmt.Errorf("kafkabus: publish: %w", driver.ErrClosed)
	}
	if err := d.checkDest(dest); err != nil {
		return err
	}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return fmt.Errorf("kafkabus: publish to %s: %w", dest, err)
	}
	limit := d.caps.MaxMessageSize
	if err := driver.CheckSize(msgs, limit); err != nil {
		return fmt.Errorf("kafkabus: publish to %s: %w", dest, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	topic := d.Topic(dest)
	rs := newRecordSlab(msgs)
	for _, m := range msgs {
		r := rs.encode(topic, m)
		if n := recordSize(r); n > int(d.cfg.batchMax()) {
			// Structured mode's base64 data can outgrow the batch.
			return fmt.Errorf("kafkabus: publish to %s: %w", dest, &driver.TooLargeError{Size: n, Limit: int(d.cfg.batchMax())})
		}
	}
	if err := d.ensureTopic(ctx, topic); err != nil {
		return err
	}
	if dest.Pattern == driver.DeadLetter {
		d.topicsMu.Lock()
		d.deadLetters[dest.Name] = topic
		d.topicsMu.Unlock()
	}
	if err := d.produceAll(ctx, rs); err != nil {
		return fmt.Errorf("kafkabus: publish to %s: %w", dest, err)
	}
	return nil
}

// produce produces recs and waits for every promise.
func (d *Driver) produce(ctx context.Context, recs []*kgo.Record) error {
	var w waiter
	w.due.Add(len(recs))
	promise := w.promise // one closure for every record
	for _, r := range recs {
		d.client.Produce(ctx, r, promise)
	}
	w.due.Wait()
	return w.err
}

// produceAll produces every record of rs and waits for every promise.
func (d *Driver) produceAll(ctx context.Context, rs *recordSlab) error {
	rs.due.Add(len(rs.recs))
	promise := rs.promise // one closure for every record
	for i := range rs.recs {
		d.client.Produce(ctx, &rs.recs[i], promise)
	}
	rs.due.Wait()
	return rs.err
}

// waiter collects the promises of one publish.
type waiter struct {
	due sync.WaitGroup // a promise each
	mu  sync.Mutex
	err error // the first failure
}

func (w *waiter) promise(_ *kgo.Record, err error) {
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = classify(err)
		}
		w.mu.Unlock()
	}
	w.due.Done()
}

// classify wraps a client error with the driver sentinel it means.
func classify(err error) error {
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%w: %w", driver.ErrClosed, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return fmt.Errorf("%w: %w", driver.ErrTooLarge, err)
	}
	var ke *kerr.Error
	if errors.As(err, &ke) && !ke.Retriable {
		return err
	}
	return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
}

// ensureTopic creates topic when it is missing, once per driver.
func (d *Driver) ensureTopic(ctx context.Context, topic string) error {
	d.topicsMu.Lock()
	ts := d.topics[topic]
	if ts == nil || (isDone(ts.once) && ts.err != nil) {
		ts = &topicState{once: make(chan struct{})}
		d.topics[topic] = ts
		d.topicsMu.Unlock()
		ts.err = d.createTopic(ctx, topic)
		close(ts.once)
	} else {
		d.topicsMu.Unlock()
	}
	select {
	case <-ts.once:
		return ts.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (d *Driver) createTopic(ctx context.Context, topic string) error {
	if !d.cfg.autoCreate() {
		return nil
	}
	parts, rf := d.cfg.Partitions, d.cfg.ReplicationFactor
	if parts == 0 {
		parts = -1
	}
	if rf == 0 {
		rf = -1
	}
	resp, err := d.admin.CreateTopic(ctx, parts, rf, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafkabus: create topic %q: %w", topic, classify(err))
	}
	return nil
}

// topicIDs returns the ids of topics, which offset commits of recent
// protocol versions name topics by.
func (d *Driver) topicIDs(ctx context.Context, topics ...string) (map[string][16]byte, error) {
	details, err := d.admin.ListTopics(ctx, topics...)
	if err == nil {
		err = details.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafkabus: describe topics %q: %w", topics, classify(err))
	}
	ids := make(map[string][16]byte, len(details))
	for t, td := range details {
		ids[t] = td.ID
	}
	return ids, nil
}

// DeclareGroup creates group opts.Group on dest without consuming: its
// offsets are committed at the end of the topic (or at its start with
// StartFirst), so that what is published from now on is kept for the group's
// first member. A group that has offsets already is left as it is.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if d.isClosed() {
		return fmt.Errorf("kafkabus: declare group: %w", driver.ErrClosed)
	}
	if err := d.checkDest(dest); err != nil {
		return err
	}
	if opts.Group == "" {
		return errors.New("kafkabus: declare group: no group name")
	}
	topic := d.Topic(dest)
	groupID := d.GroupID(dest, opts.Group)
	for _, t := range []string{topic, retryTopicName(topic, groupID)} {
		if err := d.ensureTopic(ctx, t); err != nil {
			return err
		}
		if err := d.initGroupOffsets(ctx, groupID, t, opts.StartAt); err != nil {
			return err
		}
	}
	return nil
}

// initGroupOffsets commits, for every partition of topic that group has no
// offset for, the end offset (StartNew) or the start offset (StartFirst). A
// group with members refuses commits from outside: its members started from
// offsets of their own, which is as good.
func (d *Driver) initGroupOffsets(ctx context.Context, group, topic string, start driver.StartPosition) error {
	committed, err := d.admin.FetchOffsetsForTopics(ctx, group, topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("kafkabus: fetch offsets of group %q: %w", group, classify(err))
	}
	var listed kadm.ListedOffsets
	if start == driver.StartFirst {
		listed, err = d.admin.ListStartOffsets(ctx, topic)
	} else {
		listed, err = d.admin.ListEndOffsets(ctx, topic)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return fmt.Errorf("kafkabus: list offsets of %q: %w", topic, classify(err))
	}
	missing := kadm.Offsets{}
	listed.Each(func(l kadm.ListedOffset) {
		if o, ok := committed.Lookup(topic, l.Partition); ok && o.Err == nil && o.At >= 0 {
			return
		}
		missing.AddOffset(topic, l.Partition, l.Offset, -1)
	})
	if len(missing) == 0 {
		return nil
	}
	resp, err := d.admin.CommitOffsets(ctx, group, missing)
	if err == nil {
		err = resp.Error()
	}
	if err != nil && !errors.Is(err, kerr.UnknownMemberID) && !errors.Is(err, kerr.IllegalGeneration) && !errors.Is(err, kerr.RebalanceInProgress) {
		return fmt.Errorf("kafkabus: commit starting offsets of group %q: %w", group, classify(err))
	}
	return nil
}

// Close closes every subscription (each gives back what it holds and commits
// what was settled), then the producing client: a publish still waiting for
// its acknowledgement fails with driver.ErrClosed. With the brokers gone,
// Close returns by ctx's deadline and the clients' goroutines end when their
// requests time out.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.done
		return nil
	}
	d.closed = true
	subs := make([]*subscription, 0, len(d.subs))
	for s := range d.subs {
		subs = append(subs, s)
	}
	d.mu.Unlock()
	defer close(d.done)

	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i, s := range subs {
		wg.Go(func() { errs[i] = s.Close(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if errors.Is(err, driver.ErrClosed) {
			errs[i] = nil
		}
	}
	if err := closeClient(ctx, d.client); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeClient closes cl, waiting at most until ctx ends.
func closeClient(ctx context.Context, cl *kgo.Client) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.Close()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafkabus: close: %w", ctx.Err())
	}
}

// log writes to the configured logger, if any.
func (d *Driver) log(msg string, args ...any) {
	if d.cfg.Logger != nil {
		d.cfg.Logger.Warn("kafkabus: "+msg, args...)
	}
}
