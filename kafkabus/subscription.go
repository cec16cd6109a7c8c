package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/marty-msf/eventbus/driver"
)

// Subscribe opens a subscription on dest's topic.
//
// With a group, it joins the Kafka consumer group d.GroupID(dest, group),
// which also consumes the group's retry topic; offsets the group does not
// have yet are committed first (at the end for StartNew, the start for
// StartFirst), so that a message published after Subscribe returns reaches
// the group. Subscribe returns once the member has joined and has its
// partitions. Without a group, it reads every partition directly from its
// end (or start) offset, committing nothing.
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	if d.isClosed() {
		return nil, fmt.Errorf("kafkabus: subscribe: %w", driver.ErrClosed)
	}
	if err := d.checkDest(dest); err != nil {
		return nil, err
	}
	topic := d.Topic(dest)
	if err := d.ensureTopic(ctx, topic); err != nil {
		return nil, err
	}
	s := &subscription{
		d:           d,
		dest:        dest,
		topic:       topic,
		maxInFlight: opts.MaxInFlight,
		inPlace:     d.cfg.inPlaceRetries(),
		parts:       map[topicPartition]*partState{},
		wake:        make(chan struct{}),
		pollSem:     make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		joined:      make(chan struct{}),
		loopDone:    make(chan struct{}),
		closeDone:   make(chan struct{}),
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = d.cfg.maxInFlight()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	kopts := append(append(d.baseOpts[:len(d.baseOpts):len(d.baseOpts)], d.cfg.consumerOpts()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if opts.Group == "" {
		s.inPlace = -1
		offsets, err := d.startOffsets(ctx, topic, opts.StartAt)
		if err != nil {
			return nil, err
		}
		kopts = append(kopts, kgo.ConsumePartitions(offsets))
		close(s.joined)
	} else {
		s.groupID = d.GroupID(dest, opts.Group)
		s.retryTopic = retryTopicName(topic, s.groupID)
		for _, t := range []string{topic, s.retryTopic} {
			if err := d.ensureTopic(ctx, t); err != nil {
				return nil, err
			}
			if err := d.initGroupOffsets(ctx, s.groupID, t, opts.StartAt); err != nil {
				return nil, err
			}
		}
		session, heartbeat := d.cfg.session(opts.AckWait)
		ids, err := d.topicIDs(ctx, topic, s.retryTopic)
		if err != nil {
			return nil, err
		}
		s.topicIDs = ids
		kopts = append(kopts,
			kgo.ConsumerGroup(s.groupID),
			kgo.OnOffsetsFetched(s.onOffsetsFetched),
			kgo.ConsumeTopics(topic, s.retryTopic),
			kgo.DisableAutoCommit(),
			kgo.Balancers(d.cfg.balancers()),
			kgo.SessionTimeout(session),
			kgo.HeartbeatInterval(heartbeat),
			kgo.RebalanceTimeout(d.cfg.rebalanceTimeout()),
			kgo.OnPartitionsAssigned(s.onAssigned),
			kgo.OnPartitionsRevoked(s.onRevoked),
			kgo.OnPartitionsLost(s.onLost),
		)
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: subscribe to %s: %w", dest, err)
	}
	s.cl = cl
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		cl.Close()
		return nil, fmt.Errorf("kafkabus: subscribe: %w", driver.ErrClosed)
	}
	d.subs[s] = struct{}{}
	d.mu.Unlock()
	go s.commitLoop()
	select {
	case <-s.joined:
		return s, nil
	case <-ctx.Done():
		_ = s.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("kafkabus: subscribe to %s: join group %q: %w", dest, s.groupID, ctx.Err())
	}
}

// startOffsets lists where a private subscription starts on each partition.
func (d *Driver) startOffsets(ctx context.Context, topic string, start driver.StartPosition) (map[string]map[int32]kgo.Offset, error) {
	var (
		listed kadm.ListedOffsets
		err    error
	)
	if start == driver.StartFirst {
		listed, err = d.admin.ListStartOffsets(ctx, topic)
	} else {
		listed, err = d.admin.ListEndOffsets(ctx, topic)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafkabus: list offsets of %q: %w", topic, classify(err))
	}
	out := map[string]map[int32]kgo.Offset{topic: {}}
	listed.Each(func(l kadm.ListedOffset) {
		out[topic][l.Partition] = kgo.NewOffset().At(l.Offset)
	})
	return out, nil
}

type topicPartition struct {
	topic string
	part  int32
}

// partState tracks the records of one assigned partition that were handed
// out, in offset order, so that the group commits only past records that
// were settled.
type partState struct {
	tp      topicPartition
	pending []*entry // handed out or waiting to be handed out again
	next    int64    // the offset after the last record handed out; -1 before
	commit  int64    // the offset to commit: the first unsettled one
	dirty   bool     // commit advanced and is not committed yet
	// marked: records were handed out since the last commit, which the
	// delivered mark of the next commit must announce.
	marked bool
	// announced is the delivered mark last sent in the commit metadata:
	// the offset after the last record handed out, with the attempts of
	// the record at the commit offset (see deliveryMark).
	announced deliveryMark
	// inherited is the mark the partition's previous owner committed:
	// records below inherited.end were delivered to it at least once.
	inherited deliveryMark
	inheritAt int64 // the committed offset inherited comes with
	// revoking: the partition is being given up; nothing more of it is
	// handed out. released: it was given up; settling its records changes
	// nothing on the broker.
	revoking, released bool
}

// entry is one record handed out; it is the Handle of its deliveries.
type entry struct {
	rec      *kgo.Record
	part     *partState
	msg      *driver.Message
	err      error
	attempts int  // deliveries so far
	inPlace  int  // deliveries again from memory after a Nack
	out      bool // handed out and not settled: counts in inflight
	settled  bool
}

// subscription is one consuming client and the settlement state of what it
// handed out.
type subscription struct {
	d           *Driver
	dest        driver.Destination
	topic       string
	retryTopic  string
	groupID     string
	topicIDs    map[string][16]byte
	cl          *kgo.Client
	maxInFlight int
	inPlace     int // in-place redeliveries before the retry topic; -1: always in place

	ctx    context.Context // ends when Close begins
	cancel context.CancelFunc

	pollSem chan struct{} // one poll at a time

	mu         sync.Mutex
	closed     bool
	inflight   int
	parts      map[topicPartition]*partState
	ready      []*entry // nacked, to be handed out again
	wake       chan struct{}
	pollCancel context.CancelFunc
	markTimer  *time.Timer // armed by armMark
	joinedOnce sync.Once

	kick      chan struct{}
	joined    chan struct{}
	loopDone  chan struct{}
	closeDone chan struct{}
}

// signal wakes everything waiting for a change of the settlement state.
// s.mu is held.
func (s *subscription) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *subscription) closedErr(op string) error {
	return fmt.Errorf("kafkabus: %s on %s: %w", op, s.dest, driver.ErrClosed)
}

// Receive hands out up to max deliveries: first the nacked ones waiting to
// be delivered again, then records polled from the client, never more than
// MaxInFlight unsettled at once.
func (s *subscription) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if max <= 0 {
		max = 1
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, s.closedErr("receive")
		}
		free := s.maxInFlight - s.inflight
		wake := s.wake
		if free > 0 && len(s.ready) > 0 {
			n := min(max, free, len(s.ready))
			ds := make([]*driver.Delivery, n)
			for i, e := range s.ready[:n] {
				e.out = true
				e.attempts++
				ds[i] = e.delivery()
				e.part.marked = true // the attempts of the mark may have grown
			}
			s.ready = s.ready[n:]
			s.inflight += n
			s.armMark()
			s.mu.Unlock()
			return ds, nil
		}
		s.mu.Unlock()
		if free <= 0 {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.ctx.Done():
				return nil, s.closedErr("receive")
			}
		}
		ds, err := s.poll(ctx, min(max, free))
		if err != nil || len(ds) > 0 {
			return ds, err
		}
	}
}

// poll polls up to n records and hands them out. It returns no deliveries
// and no error when it was woken by a Nack or a settlement.
func (s *subscription) poll(ctx context.Context, n int) ([]*driver.Delivery, error) {
	select {
	case s.pollSem <- struct{}{}:
		defer func() { <-s.pollSem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, s.closedErr("receive")
	}
	// A Nack or Close ends the poll through pollCancel (wakePoller).
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	if len(s.ready) > 0 || s.closed {
		s.mu.Unlock()
		return nil, nil
	}
	s.pollCancel = cancel
	s.mu.Unlock()
	fs := s.cl.PollRecords(pctx, n)
	s.mu.Lock()
	s.pollCancel = nil
	s.mu.Unlock()
	if fs.IsClientClosed() {
		return nil, s.closedErr("receive")
	}
	n = fs.NumRecords()
	var (
		ds    = make([]*driver.Delivery, 0, n)
		slab  = make([]handed, n)
		taken = 0
		text  strings.Builder // the keys and header values of the poll
		size  = 0
	)
	fs.EachRecord(func(r *kgo.Record) { size += headerBytes(r) })
	text.Grow(size)
	s.mu.Lock()
	var st *partState // the partition of the previous record: records come by partition
	fs.EachRecord(func(r *kgo.Record) {
		if st == nil || st.tp.part != r.Partition || st.tp.topic != r.Topic {
			st = s.partOf(r)
		}
		h := &slab[taken]
		if e := s.handOut(r, st, &h.e, &h.m, &text); e != nil {
			h.d = driver.Delivery{Message: e.msg, Attempt: e.attempts, Err: e.err, Handle: e}
			ds = append(ds, &h.d)
			taken++
		}
	})
	if len(ds) > 0 {
		s.armMark()
	}
	closed := s.closed
	s.mu.Unlock()
	if len(ds) > 0 {
		return ds, nil
	}
	switch {
	case closed:
		return nil, s.closedErr("receive")
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	fs.EachError(func(t string, p int32, err error) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.d.log("fetch", "topic", t, "partition", p, "err", err)
		}
	})
	return nil, nil
}

// handed is a record handed out: its entry, message and first delivery.
// Those of one poll are allocated together.
type handed struct {
	e entry
	m driver.Message
	d driver.Delivery
}

// partOf returns the state of r's partition, or nil when the partition is
// not (or no longer) assigned to this member. s.mu is held.
func (s *subscription) partOf(r *kgo.Record) *partState {
	tp := topicPartition{r.Topic, r.Partition}
	st := s.parts[tp]
	if st == nil && s.groupID == "" {
		st = &partState{tp: tp, next: -1, commit: -1}
		s.parts[tp] = st
	}
	return st
}

// handOut registers r, of partition st, as handed out in e, decoding it into
// m (its strings into text), and returns e, or nil when r belongs to a
// partition this member does not have or is giving up. s.mu is held.
func (s *subscription) handOut(r *kgo.Record, st *partState, e *entry, m *driver.Message, text *strings.Builder) *entry {
	if st == nil || st.revoking || st.released || (st.next >= 0 && r.Offset < st.next) {
		return nil
	}
	st.next = r.Offset + 1
	msg, prior, err := decodeInto(m, r, text)
	if s.groupID != "" {
		prior = max(prior, st.inherited.prior(st.inheritAt, r.Offset))
		if st.commit < 0 {
			st.commit = r.Offset
		}
		st.marked = true
	}
	*e = entry{rec: r, part: st, msg: msg, err: err, attempts: prior + 1, out: true}
	st.pending = append(st.pending, e)
	s.inflight++
	return e
}

func (e *entry) delivery() *driver.Delivery {
	m := e.msg
	if e.attempts > 1 {
		// A delivery again carries its own copy: the first one belongs to
		// whoever received it.
		m = m.Clone()
	}
	return &driver.Delivery{Message: m, Attempt: e.attempts, Err: e.err, Handle: e}
}

// entries returns the entries of ds, checking that they are this driver's.
func entries(ds []*driver.Delivery) ([]*entry, error) {
	es := make([]*entry, len(ds))
	for i, d := range ds {
		e, ok := d.Handle.(*entry)
		if !ok || e == nil {
			return nil, errors.New("kafkabus: settle a delivery that kafkabus did not hand out")
		}
		es[i] = e
	}
	return es, nil
}

// Ack marks the deliveries processed. Their partition's commit advances past
// every record settled without a gap; the commit loop sends it at once,
// coalescing the acks that arrive while a commit is in flight.
func (s *subscription) Ack(ctx context.Context, ds []*driver.Delivery) error {
	return s.settle("ack", ds)
}

// Term settles the deliveries without processing: in Kafka, like Ack, the
// group's offset moves past them.
func (s *subscription) Term(ctx context.Context, ds []*driver.Delivery) error {
	return s.settle("term", ds)
}

func (s *subscription) settle(op string, ds []*driver.Delivery) error {
	es, err := entries(ds)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closedErr(op)
	}
	advanced := false
	for _, e := range es {
		if !e.out {
			continue
		}
		e.out = false
		s.inflight--
		advanced = s.markSettled(e) || advanced
	}
	s.signal()
	s.mu.Unlock()
	if advanced {
		s.kickCommit()
	}
	return nil
}

// markSettled settles e and advances its partition's commit offset. It
// reports whether there is something new to commit. s.mu is held.
func (s *subscription) markSettled(e *entry) bool {
	e.settled = true
	st := e.part
	if st.released || s.groupID == "" {
		return false
	}
	i := 0
	for i < len(st.pending) && st.pending[i].settled {
		i++
	}
	if i == 0 {
		return false
	}
	clear(st.pending[:i])
	st.pending = st.pending[i:]
	at := st.next
	if len(st.pending) > 0 {
		at = st.pending[0].rec.Offset
	}
	if at > st.commit {
		st.commit, st.dirty = at, true
		return true
	}
	return false
}

// markDelay is how long a delivered mark may wait for a commit that
// settlements cause: a delivery settled sooner needs no mark of its own.
const markDelay = 50 * time.Millisecond

// armMark makes sure that a commit carries the delivered marks of what was
// just handed out within markDelay. s.mu is held.
func (s *subscription) armMark() {
	if s.groupID == "" || s.markTimer != nil || s.closed {
		return
	}
	s.markTimer = time.AfterFunc(markDelay, func() {
		s.mu.Lock()
		s.markTimer = nil
		s.mu.Unlock()
		s.kickCommit()
	})
}

func (s *subscription) kickCommit() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Nack asks for the deliveries again. A group's delivery comes back from
// memory InPlaceRetries times (its partition's commit waits for it, the
// partition's other records go on); after that it is produced to the tail of
// the group's retry topic with its attempt count, and its original is
// settled, so that it never holds its partition's commit back for long. A
// private subscription always delivers again from memory. The driver has no
// native delay: the bus waits before it nacks.
func (s *subscription) Nack(ctx context.Context, ds []*driver.Delivery, _ time.Duration) error {
	es, err := entries(ds)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closedErr("nack")
	}
	var retry []*entry
	for _, e := range es {
		if !e.out {
			continue
		}
		e.out = false
		s.inflight--
		if e.part.revoking || e.part.released {
			continue // the partition's next owner delivers it again
		}
		if s.inPlace >= 0 && e.inPlace >= s.inPlace {
			retry = append(retry, e)
			continue
		}
		e.inPlace++
		s.ready = append(s.ready, e)
	}
	s.wakePoller()
	s.mu.Unlock()
	if len(retry) > 0 {
		return s.toRetryTopic(ctx, retry)
	}
	return nil
}

// wakePoller ends a blocked poll so that Receive hands out what is ready,
// or, after Close, returns. s.mu is held.
func (s *subscription) wakePoller() {
	if s.pollCancel != nil {
		s.pollCancel()
	}
	s.signal()
}

// toRetryTopic produces the records of es to the group's retry topic, then
// settles them. Should the produce fail, they are delivered again from memory.
func (s *subscription) toRetryTopic(ctx context.Context, es []*entry) error {
	recs := make([]*kgo.Record, len(es))
	for i, e := range es {
		r := &kgo.Record{Topic: s.retryTopic, Key: e.rec.Key, Value: e.rec.Value}
		r.Headers = make([]kgo.RecordHeader, 0, len(e.rec.Headers)+1)
		for _, h := range e.rec.Headers {
			if h.Key != attemptsHeader {
				r.Headers = append(r.Headers, h)
			}
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: attemptsHeader, Value: []byte(strconv.Itoa(e.attempts))})
		recs[i] = r
	}
	err := s.d.produce(ctx, recs)
	s.mu.Lock()
	advanced := false
	for _, e := range es {
		if err != nil {
			s.ready = append(s.ready, e)
			continue
		}
		advanced = s.markSettled(e) || advanced
	}
	s.wakePoller()
	s.mu.Unlock()
	if advanced {
		s.kickCommit()
	}
	if err != nil {
		return fmt.Errorf("kafkabus: nack on %s: produce to retry topic %q (delivered again in place): %w", s.dest, s.retryTopic, err)
	}
	return nil
}

// commitLoop commits what the settlements advanced, one commit at a time;
// settlements that arrive during a commit go into the next one.
func (s *subscription) commitLoop() {
	defer close(s.loopDone)
	if s.groupID == "" {
		return
	}
	for {
		select {
		case <-s.kick:
		case <-s.ctx.Done():
			return
		}
		if err := s.commitDirty(s.ctx, nil); err != nil && s.ctx.Err() == nil {
			s.d.log("commit", "group", s.groupID, "err", err)
		}
	}
}

// commitDirty commits the advanced offsets of the partitions in only (every
// partition when only is nil), each with its delivered mark as metadata.
func (s *subscription) commitDirty(ctx context.Context, only map[topicPartition]bool) error {
	member, generation := s.cl.GroupMetadata()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.MemberID, req.Generation = s.groupID, member, generation
	topics := map[string]int{}
	var sts []*partState
	s.mu.Lock()
	for tp, st := range s.parts {
		// A mark alone is worth a commit only while some of what was
		// handed out is unsettled.
		if !(st.dirty || st.marked && st.next > st.commit) || st.commit < 0 || (only != nil && !only[tp]) {
			continue
		}
		st.dirty, st.marked = false, false
		sts = append(sts, st)
		i, ok := topics[tp.topic]
		if !ok {
			i = len(req.Topics)
			topics[tp.topic] = i
			t := kmsg.NewOffsetCommitRequestTopic()
			t.Topic, t.TopicID = tp.topic, s.topicIDs[tp.topic]
			req.Topics = append(req.Topics, t)
		}
		mark := deliveryMark{end: st.next}
		if len(st.pending) > 0 && st.pending[0].rec.Offset == st.commit {
			mark.attempts = st.pending[0].attempts
		}
		st.announced = mark
		p := kmsg.NewOffsetCommitRequestTopicPartition()
		p.Partition, p.Offset, p.LeaderEpoch = tp.part, st.commit, -1
		meta := mark.String()
		p.Metadata = &meta
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, p)
	}
	s.mu.Unlock()
	if len(sts) == 0 {
		return nil
	}
	resp, cerr := req.RequestWith(ctx, s.cl)
	if cerr == nil {
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && cerr == nil {
					cerr = perr
				}
			}
		}
	}
	if cerr != nil {
		// Let the next commit carry these offsets again, unless the
		// partition went to another member meanwhile.
		s.mu.Lock()
		for _, st := range sts {
			if !st.released {
				st.dirty = true
			}
		}
		s.mu.Unlock()
	}
	return cerr
}

// deliveryMark is what a member tells the next owner of a partition, in the
// metadata of its offset commits: the records from the committed offset up
// to end were handed out, and may have been processed without being
// settled; the one at the committed offset was handed out attempts times.
// The next owner counts those deliveries in the Attempt of its own, so that
// a member that dies does not reset the count. A mark is committed after the
// records are handed out (within markDelay and a round trip): a member that
// dies before it reaches the broker leaves the count one short.
type deliveryMark struct {
	end      int64
	attempts int
}

const markPrefix = "eventbus-delivered "

func (m deliveryMark) String() string {
	return markPrefix + strconv.FormatInt(m.end, 10) + " " + strconv.Itoa(m.attempts)
}

// parseMark reads a mark from commit metadata; other metadata (a member id,
// which franz-go commits, or nothing) is no mark.
func parseMark(meta string) (deliveryMark, bool) {
	rest, ok := strings.CutPrefix(meta, markPrefix)
	if !ok {
		return deliveryMark{}, false
	}
	endS, attS, ok := strings.Cut(rest, " ")
	end, err1 := strconv.ParseInt(endS, 10, 64)
	att, err2 := strconv.Atoi(attS)
	if !ok || err1 != nil || err2 != nil || end < 0 || att < 0 {
		return deliveryMark{}, false
	}
	return deliveryMark{end: end, attempts: att}, true
}

// prior is how many deliveries the record at offset had before, by the
// mark that came with committed offset at.
func (m deliveryMark) prior(at, offset int64) int {
	switch {
	case offset >= m.end || offset < at:
		return 0
	case offset == at:
		return max(m.attempts, 1)
	}
	return 1
}

// onOffsetsFetched reads the delivered marks of the partitions this member
// was just assigned, before their records are fetched.
func (s *subscription) onOffsetsFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	inherit := func(topic string, id [16]byte, part int32, offset int64, meta *string) {
		if topic == "" {
			for t, tid := range s.topicIDs {
				if tid == id {
					topic = t
				}
			}
		}
		st := s.parts[topicPartition{topic, part}]
		if st == nil || meta == nil {
			return
		}
		if mark, ok := parseMark(*meta); ok && mark.end > offset {
			st.inherited, st.inheritAt = mark, offset
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				inherit(t.Topic, t.TopicID, p.Partition, p.Offset, p.Metadata)
			}
		}
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			inherit(t.Topic, [16]byte{}, p.Partition, p.Offset, p.Metadata)
		}
	}
	return nil
}

// onAssigned starts tracking newly assigned partitions.
func (s *subscription) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	for t, ps := range assigned {
		for _, p := range ps {
			tp := topicPartition{t, p}
			s.parts[tp] = &partState{tp: tp, next: -1, commit: -1}
		}
	}
	s.mu.Unlock()
	s.joinedOnce.Do(func() { close(s.joined) })
}

// onRevoked gives partitions up in a rebalance: it stops handing out their
// records, waits until what was handed out is settled (up to three quarters
// of the rebalance timeout, or until the subscription closes), commits what
// was settled, and forgets the rest, which the next owner receives again.
func (s *subscription) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	sts := s.beginRevoke(revoked)
	if len(sts) == 0 {
		return
	}
	deadline := time.NewTimer(s.d.cfg.rebalanceTimeout() * 3 / 4)
	defer deadline.Stop()
	s.mu.Lock()
	for !s.closed && anyOut(sts) {
		wake := s.wake
		s.mu.Unlock()
		gaveUp := false
		select {
		case <-wake:
		case <-s.ctx.Done():
		case <-ctx.Done():
			gaveUp = true
		case <-deadline.C:
			s.d.log("rebalance: giving up partitions with unsettled deliveries", "group", s.groupID)
			gaveUp = true
		}
		s.mu.Lock()
		if gaveUp {
			break
		}
	}
	closing := s.closed
	only := map[topicPartition]bool{}
	for _, st := range sts {
		only[st.tp] = true
	}
	s.mu.Unlock()
	if !closing {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.commitDirty(cctx, only); err != nil {
			s.d.log("commit on revoke", "group", s.groupID, "err", err)
		}
		cancel()
	}
	s.release(sts)
}

// onLost forgets partitions that went to another member without a revoke.
func (s *subscription) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.release(s.beginRevoke(lost))
}

// beginRevoke stops handing out the records of the partitions and drops
// those waiting to be delivered again.
func (s *subscription) beginRevoke(parts map[string][]int32) []*partState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sts []*partState
	for t, ps := range parts {
		for _, p := range ps {
			if st := s.parts[topicPartition{t, p}]; st != nil {
				st.revoking = true
				sts = append(sts, st)
			}
		}
	}
	kept := s.ready[:0]
	for _, e := range s.ready {
		if !e.part.revoking {
			kept = append(kept, e)
		}
	}
	clear(s.ready[len(kept):])
	s.ready = kept
	return sts
}

func (s *subscription) release(sts []*partState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range sts {
		st.released = true
		if s.parts[st.tp] == st {
			delete(s.parts, st.tp)
		}
	}
}

// anyOut reports whether a delivery of sts is handed out and unsettled.
// s.mu is held.
func anyOut(sts []*partState) bool {
	for _, st := range sts {
		for _, e := range st.pending {
			if e.out {
				return true
			}
		}
	}
	return false
}

// Close stops the subscription: what the client fetched and did not hand
// out, and what was handed out and not settled, is not committed, and the
// member leaves its group at once, so that another member receives it
// without waiting for a session timeout. What was settled is committed
// first.
func (s *subscription) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		select {
		case <-s.closeDone:
		case <-ctx.Done():
		}
		return nil
	}
	s.closed = true
	s.ready = nil
	if s.markTimer != nil {
		s.markTimer.Stop()
		s.markTimer = nil
	}
	s.wakePoller()
	s.mu.Unlock()
	defer close(s.closeDone)
	s.cancel()
	<-s.loopDone
	var errs []error
	if s.groupID != "" && ctx.Err() == nil {
		if err := s.commitDirty(ctx, nil); err != nil {
			errs = append(errs, fmt.Errorf("kafkabus: close %s: commit: %w", s.dest, err))
		}
	}
	if err := closeClient(ctx, s.cl); err != nil {
		errs = append(errs, err)
	}
	s.d.mu.Lock()
	delete(s.d.subs, s)
	s.d.mu.Unlock()
	return errors.Join(errs...)
}
