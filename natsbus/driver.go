package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
)

// Driver is a driver.Driver and driver.RequestReplier on one NATS connection.
// All methods are safe for concurrent use.
type Driver struct {
	nc       *nats.Conn
	ownsConn bool
	server   *Server // shut down by Close, when the driver started it
	js       jetstream.JetStream
	opts     Options
	caps     driver.Capabilities
	// window holds one token per asynchronous publish awaiting its ack.
	window chan struct{}
	// pending maps each *nats.Msg awaiting its ack to its batch.
	pendingMu sync.Mutex
	pending   map[*nats.Msg]*pubBatch
	closed    atomic.Bool
	flusher   flusher

	mu   sync.Mutex
	subs map[subscription]struct{}
	done chan struct{}
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.RequestReplier = (*Driver)(nil)
	_ driver.GroupDeclarer  = (*Driver)(nil)
)

// subscription is what Driver.Close closes.
type subscription interface {
	close(ctx context.Context) error
}

// The oldest servers the driver works with: message headers arrived in 2.2,
// the consumer API the jetstream client uses (named consumers, pull
// heartbeats) in 2.9.
const (
	minHeadersVersion   = "2.2.0"
	minJetStreamVersion = "2.9.0"
)

// Open connects to the servers of cfg (nil: nats://127.0.0.1:4222, JetStream
// on), checks what the server can do and creates or updates the JetStream
// streams. Close closes the connection.
func Open(ctx context.Context, cfg *Config) (*Driver, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := cfg.Options.withDefaults()
	nc, err := cfg.connect(ctx, o.Logger)
	if err != nil {
		return nil, err
	}
	d, err := newDriver(ctx, nc, o, true)
	if err != nil {
		nc.Close()
		return nil, redact(err, cfg.secrets())
	}
	return d, nil
}

// New wraps a connection the caller made, for settings Config does not
// cover. Close leaves nc open: the caller closes it after the driver.
func New(ctx context.Context, nc *nats.Conn, opts *Options) (*Driver, error) {
	if nc == nil {
		return nil, errors.New("natsbus: New: nil connection")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return newDriver(ctx, nc, opts.withDefaults(), false)
}

func newDriver(ctx context.Context, nc *nats.Conn, o Options, owns bool) (*Driver, error) {
	if !nc.IsConnected() {
		return nil, fmt.Errorf("natsbus: connection is %v: %w", nc.Status(), driver.ErrUnavailable)
	}
	version := nc.ConnectedServerVersion()
	if !nc.HeadersSupported() || !versionAtLeast(version, minHeadersVersion) {
		return nil, fmt.Errorf("natsbus: server %s has no message headers (NATS %s or later carries CloudEvents attributes): %w",
			version, minHeadersVersion, driver.ErrUnsupported)
	}
	limit := int(nc.MaxPayload()) - headerAllowance
	if limit < 1024 {
		limit = int(nc.MaxPayload()) / 2
	}
	if o.MaxMessageSize > 0 && o.MaxMessageSize < limit {
		limit = o.MaxMessageSize
	}
	d := &Driver{
		nc:       nc,
		ownsConn: owns,
		opts:     o,
		window:   make(chan struct{}, o.PublishWindow),
		pending:  make(map[*nats.Msg]*pubBatch),
		subs:     make(map[subscription]struct{}),
		done:     make(chan struct{}),
	}
	d.caps = driver.Capabilities{
		Name:               "nats",
		ConsumerGroups:     true,
		OrderingByKey:      true,
		NativeRequestReply: true,
		MaxMessageSize:     limit,
	}
	if !*o.JetStream {
		// Core NATS: queue groups, in-order delivery per connection, inboxes.
		// No storage, so nothing durable, no redelivery, and no stream
		// pattern (a stream is replayed and consumed in batches from storage)
		// nor dead letters (nobody might be listening when they are written).
		d.caps.Patterns = []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Broadcast, driver.Reply}
		d.flusher.start(d)
		return d, nil
	}
	if !versionAtLeast(version, minJetStreamVersion) {
		return nil, fmt.Errorf("natsbus: server %s is too old for JetStream consumers (NATS %s or later), or set Options.JetStream to false: %w",
			version, minJetStreamVersion, driver.ErrUnsupported)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncAckHandler(d.onPublishAck),
		jetstream.WithPublishAsyncErrHandler(d.onPublishError),
		jetstream.WithPublishAsyncMaxPending(2*o.PublishWindow),
		jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("natsbus: JetStream is not enabled on server %s (start it with JetStream, or set Options.JetStream to false): %w",
				version, driver.ErrUnsupported)
		}
		return nil, fmt.Errorf("natsbus: JetStream account info: %w", classify(err))
	}
	d.js = js
	if err := d.ensureStreams(ctx); err != nil {
		js.CleanupPublisher()
		return nil, err
	}
	d.caps.Durable = true
	d.caps.Redelivery = true
	d.caps.NativeDelay = true
	d.caps.Patterns = []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Stream, driver.Broadcast, driver.Reply, driver.DeadLetter}
	d.flusher.start(d)
	return d, nil
}

// publishAckTimeout bounds the wait for one message's ack, so that a lost
// ack frees its slot in the window (and in the client); the message is then
// published again, which the server de-duplicates when it carries a
// Nats-Msg-Id (PublishDeduplicated) and may store twice otherwise.
const publishAckTimeout = 10 * time.Second

// Conn returns the underlying connection, an escape hatch for what the
// driver does not expose.
func (d *Driver) Conn() *nats.Conn { return d.nc }

// JetStream returns the JetStream context, or nil when JetStream is off.
func (d *Driver) JetStream() jetstream.JetStream { return d.js }

// StreamName returns the JetStream stream that stores pattern p, or "" when
// p is not stored (JetStream off, or a core NATS pattern).
func (d *Driver) StreamName(p driver.Pattern) string {
	if d.js == nil || !persistent(p) {
		return ""
	}
	return streamName(d.opts.StreamPrefix, p)
}

// Capabilities reports what the connected server allows. It does not change
// after Open.
func (d *Driver) Capabilities() driver.Capabilities { return d.caps }

func (d *Driver) isClosed() bool { return d.closed.Load() }

func (d *Driver) checkDest(op string, dest driver.Destination) (string, error) {
	if d.isClosed() {
		return "", fmt.Errorf("natsbus: %s %q: %w", op, dest.Name, driver.ErrClosed)
	}
	subj, err := subjectOf(dest)
	if err != nil {
		return "", fmt.Errorf("natsbus: %s: %w", op, err)
	}
	if d.opts.SubjectPrefix != "" {
		subj = d.opts.SubjectPrefix + "." + subj
	}
	if !d.caps.Serves(dest.Pattern) {
		return "", fmt.Errorf("natsbus: %s %q: the %s pattern needs JetStream, which is off: %w", op, subj, dest.Pattern, driver.ErrUnsupported)
	}
	return subj, nil
}

// Publish sends msgs to dest. On a JetStream destination it returns nil once
// the server stored every message; on a core NATS one, once they were written
// and a flush that started afterwards completed. The messages carry no
// Nats-Msg-Id: the server stores a message published twice twice
// (PublishDeduplicated has it de-duplicated).
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	return d.publish(ctx, dest, msgs, false)
}

// PublishDeduplicated is Publish with a Nats-Msg-Id on each message bound
// for a stream (see the package doc): the server drops a repeat of (source,
// id, destination) within Streams.Duplicates, and the call then returns an
// error matching driver.ErrDuplicate after storing the rest of msgs.
func (d *Driver) PublishDeduplicated(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	return d.publish(ctx, dest, msgs, true)
}

func (d *Driver) publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message, dedup bool) error {
	subj, err := d.checkDest("publish", dest)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := checkPublish(msgs, d.caps.MaxMessageSize); err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subj, err)
	}
	if d.js != nil && persistent(dest.Pattern) {
		nms := make([]*nats.Msg, len(msgs))
		for i, m := range msgs {
			nms[i] = encode(subj, m, true, dedup)
		}
		err = d.publishStored(ctx, nms)
	} else {
		err = d.publishCore(ctx, subj, msgs)
	}
	if err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subj, err)
	}
	return nil
}

// checkPublish refuses, before the wire, what every driver refuses: an
// envelope that cannot travel unchanged, or one over the size limit.
func checkPublish(msgs []*driver.Message, limit int) error {
	if err := driver.CheckEnvelope(msgs); err != nil {
		return err
	}
	return driver.CheckSize(msgs, limit)
}

func (d *Driver) publishCore(ctx context.Context, subj string, msgs []*driver.Message) error {
	for _, m := range msgs {
		if err := d.publishMsg(subj, m); err != nil {
			return d.classify(err)
		}
	}
	return d.flusher.wait(ctx)
}

// publishMsg writes m to subj on the connection, without waiting. The
// client copies the message into its write buffer before PublishMsg
// returns, so the wire message is pooled and nothing of m is retained.
func (d *Driver) publishMsg(subj string, m *driver.Message) error {
	_, err := sendCore(subj, m, func(nm *nats.Msg) (struct{}, error) {
		return struct{}{}, d.nc.PublishMsg(nm)
	})
	return err
}

// flush waits until the server has processed everything written so far.
func (d *Driver) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, publishAckTimeout)
		defer cancel()
	}
	if err := d.nc.FlushWithContext(ctx); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("flush: %w: %w", driver.ErrUnavailable, ctxErr)
		}
		return d.classify(err)
	}
	return nil
}

// publishStored publishes asynchronously, pipelined within the shared window,
// and waits for every ack. Messages whose publish failed for a transient
// reason (a lost connection, a lost ack, a stream not yet back) are published
// again once connected, with the same Nats-Msg-Id if any, while ctx allows.
func (d *Driver) publishStored(ctx context.Context, nms []*nats.Msg) error {
	pending := nms
	// Retries while connected are bounded, so that a stream deleted under
	// the driver fails the publish instead of retrying until ctx ends;
	// waiting for a lost connection to come back is bounded by ctx alone.
	connectedRetries := 0
	backoff := 50 * time.Millisecond
	// Only the first round's duplicates are the caller's: a message published
	// again after a lost ack or connection is reported as a duplicate when
	// the first attempt was stored after all, which is the success we wanted.
	duplicates := 0
	for round := 0; ; round++ {
		failed, dups, err := d.publishOnce(ctx, pending)
		if round == 0 {
			duplicates = dups
		}
		if len(failed) == 0 {
			if duplicates > 0 {
				return fmt.Errorf("%d of %d messages already stored within the duplicate window (same source, id and destination), not stored again: %w",
					duplicates, len(nms), driver.ErrDuplicate)
			}
			return nil
		}
		unacked := func(cause error) error {
			return fmt.Errorf("%d of %d messages unacknowledged: %w", len(failed), len(nms), cause)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return unacked(fmt.Errorf("%w: %w", d.classify(err), ctxErr))
		}
		if !transient(err) {
			return unacked(d.classify(err))
		}
		if d.nc.IsConnected() {
			if connectedRetries++; connectedRetries > maxConnectedRetries {
				return unacked(d.classify(err))
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return unacked(fmt.Errorf("%w: %w", d.classify(err), ctx.Err()))
			}
			backoff = min(2*backoff, 200*time.Millisecond)
		}
		if werr := d.waitConnected(ctx); werr != nil {
			return unacked(fmt.Errorf("%w: %w", d.classify(err), werr))
		}
		pending = failed
	}
}

// maxConnectedRetries bounds the attempts to publish while connected: each
// takes up to half a second when the stream does not answer (the client's
// own retries), so about 6 s in all, time enough for a restarted server's
// JetStream to come back.
const maxConnectedRetries = 8

// pubBatch follows the acknowledgements of one publishOnce call. The
// jetstream client reports each message's outcome through the driver's ack
// and error handlers, which find the batch in Driver.pending.
type pubBatch struct {
	remaining atomic.Int64
	done      chan struct{}

	mu         sync.Mutex
	failed     []*nats.Msg
	err        error
	duplicates int
}

// errDuplicateAck marks a publish the server acknowledged as a duplicate.
var errDuplicateAck = errors.New("duplicate")

func (b *pubBatch) settle(m *nats.Msg, err error) {
	if err == errDuplicateAck {
		b.mu.Lock()
		b.duplicates++
		b.mu.Unlock()
	} else if err != nil {
		b.mu.Lock()
		b.failed = append(b.failed, m)
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	if b.remaining.Add(-1) == 0 {
		close(b.done)
	}
}

// settlePublish records the outcome of m, once: the first of the client's
// handlers and publishOnce giving up to claim m frees its window slot.
func (d *Driver) settlePublish(m *nats.Msg, err error) {
	d.pendingMu.Lock()
	b, ok := d.pending[m]
	delete(d.pending, m)
	d.pendingMu.Unlock()
	if ok {
		<-d.window
		b.settle(m, err)
	}
}

func (d *Driver) onPublishAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	if ack != nil && ack.Duplicate {
		d.settlePublish(m, errDuplicateAck)
		return
	}
	d.settlePublish(m, nil)
}

func (d *Driver) onPublishError(_ jetstream.JetStream, m *nats.Msg, err error) {
	d.settlePublish(m, err)
}

// publishOnce publishes nms asynchronously and returns those the server did
// not acknowledge, with the first error, and how many it acknowledged as
// duplicates. Slots in the window are freed by the
// acknowledgements themselves, so concurrent calls share the window without
// waiting on each other's batches.
func (d *Driver) publishOnce(ctx context.Context, nms []*nats.Msg) ([]*nats.Msg, int, error) {
	b := &pubBatch{done: make(chan struct{})}
	b.remaining.Store(int64(len(nms)))
	for _, m := range nms {
		if err := ctx.Err(); err != nil {
			b.settle(m, err)
			continue
		}
		select {
		case d.window <- struct{}{}:
		case <-ctx.Done():
			b.settle(m, ctx.Err())
			continue
		case <-d.done:
			b.settle(m, driver.ErrClosed)
			continue
		}
		d.pendingMu.Lock()
		d.pending[m] = b
		d.pendingMu.Unlock()
		if _, err := d.js.PublishMsgAsync(m); err != nil {
			d.settlePublish(m, err)
		}
	}
	giveUp := func(err error) {
		for _, m := range nms {
			d.settlePublish(m, err)
		}
		// A handler that claimed a message before us settles it promptly.
		<-b.done
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		giveUp(ctx.Err())
	case <-d.done:
		// The client reports nothing for acks outstanding when its
		// connection closes.
		giveUp(driver.ErrClosed)
	}
	return b.failed, b.duplicates, b.err
}

// transient reports whether a publish may succeed when tried again.
func transient(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrStaleConnection) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs) ||
		isUnavailableAPIError(err)
}

// isUnavailableAPIError matches the server's 503 answers, given while
// JetStream recovers after a restart.
func isUnavailableAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}

// waitConnected waits until the connection is up again, ctx ends or the
// driver closes.
func (d *Driver) waitConnected(ctx context.Context) error {
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return driver.ErrClosed
		}
		if d.nc.IsClosed() {
			return nats.ErrConnectionClosed
		}
		if d.nc.IsConnected() {
			return nil
		}
		t.Reset(20 * time.Millisecond)
	}
}

// classify wraps a client error with the driver sentinel it means.
func (d *Driver) classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrClosed), errors.Is(err, driver.ErrUnavailable):
		return err
	case d.isClosed() && (errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed)):
		return fmt.Errorf("%w: %w", driver.ErrClosed, err)
	}
	return classify(err)
}

func classify(err error) error {
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: %w", driver.ErrTooLarge, err)
	case transient(err),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, jetstream.ErrConnectionClosed),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return err
}

// Subscribe opens a subscription. On a JetStream destination, a group is a
// pull consumer with explicit acks (durable when opts.Durable), and a private
// subscription an ephemeral consumer; on a core NATS destination, a group is
// a queue group.
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	subj, err := d.checkDest("subscribe", dest)
	if err != nil {
		return nil, err
	}
	if err := checkGroup(opts.Group); err != nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subj, err)
	}
	var s subscription
	if d.js != nil && persistent(dest.Pattern) {
		s, err = d.subscribeStored(ctx, dest, subj, opts)
	} else {
		if opts.Durable {
			return nil, fmt.Errorf("natsbus: subscribe to %q: a durable group needs a JetStream pattern (event, command, stream, dead letter) and JetStream on: %w",
				subj, driver.ErrUnsupported)
		}
		s, err = d.subscribeCore(ctx, subj, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subj, err)
	}
	d.mu.Lock()
	if d.subs == nil {
		d.mu.Unlock()
		_ = s.close(ctx)
		return nil, fmt.Errorf("natsbus: subscribe to %q: %w", subj, driver.ErrClosed)
	}
	d.subs[s] = struct{}{}
	d.mu.Unlock()
	return s.(driver.Subscription), nil
}

func (d *Driver) forget(s subscription) {
	d.mu.Lock()
	delete(d.subs, s)
	d.mu.Unlock()
}

// Request sends req to a Query destination over a NATS inbox and waits for
// the reply.
func (d *Driver) Request(ctx context.Context, dest driver.Destination, req *driver.Message) (*driver.Message, error) {
	subj, err := d.checkDest("request", dest)
	if err != nil {
		return nil, err
	}
	if dest.Pattern != driver.Query {
		return nil, fmt.Errorf("natsbus: request to %q: native request/reply serves query destinations only: %w", subj, driver.ErrUnsupported)
	}
	if err := checkPublish([]*driver.Message{req}, d.caps.MaxMessageSize); err != nil {
		return nil, fmt.Errorf("natsbus: request to %q: %w", subj, err)
	}
	// The request is written before RequestMsgWithContext waits for the
	// reply, and not retained.
	resp, err := sendCore(subj, req, func(nm *nats.Msg) (*nats.Msg, error) {
		return d.nc.RequestMsgWithContext(ctx, nm)
	})
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("natsbus: request to %q: %w", subj, driver.ErrNoResponders)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("natsbus: request to %q: %w", subj, ctx.Err())
	default:
		return nil, fmt.Errorf("natsbus: request to %q: %w", subj, d.classify(err))
	}
	m, err := decode(resp.Header, resp.Data)
	if err != nil {
		return nil, fmt.Errorf("natsbus: reply from %q: %w", subj, err)
	}
	return m, nil
}

// Reply answers the request carried by dl, which a subscription of this
// driver received on a Query destination.
func (d *Driver) Reply(ctx context.Context, dl *driver.Delivery, reply *driver.Message) error {
	if d.isClosed() {
		return fmt.Errorf("natsbus: reply: %w", driver.ErrClosed)
	}
	req, ok := dl.Handle.(*nats.Msg)
	if !ok || req.Reply == "" {
		return errors.New("natsbus: reply: the delivery is not a request received by a natsbus query subscription")
	}
	if err := checkPublish([]*driver.Message{reply}, d.caps.MaxMessageSize); err != nil {
		return fmt.Errorf("natsbus: reply: %w", err)
	}
	if err := d.publishMsg(req.Reply, reply); err != nil {
		return fmt.Errorf("natsbus: reply: %w", d.classify(err))
	}
	return nil
}

// Close closes every subscription (unsettled JetStream messages are
// redelivered later), flushes what was published and acked, closes the
// connection when Open made it, and shuts down the embedded server when
// OpenEmbedded started it.
func (d *Driver) Close(ctx context.Context) error {
	if !d.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("natsbus: close: %w", driver.ErrClosed)
	}
	close(d.done)
	d.flusher.stop(ctx)
	d.mu.Lock()
	subs := make([]subscription, 0, len(d.subs))
	for s := range d.subs {
		subs = append(subs, s)
	}
	d.subs = nil
	d.mu.Unlock()

	var errs []error
	for _, s := range subs {
		if err := s.close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.nc.IsConnected() {
		if err := d.flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("natsbus: close: %w", err))
		}
	}
	switch {
	case d.ownsConn:
		// Closing the connection ends the client's publisher goroutine; a
		// CleanupPublisher just before could strand it (it may not yet have
		// read the status channel that CleanupPublisher removes).
		closeConn(ctx, d.nc)
	case d.js != nil:
		// The caller's connection stays open: remove the ack subscription.
		d.js.CleanupPublisher()
	}
	if d.server != nil {
		if err := d.server.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeConn closes nc and waits, within ctx, until its callbacks have run.
// A connection that closed by itself (reconnect attempts exhausted,
// credentials refused) ran its closed callback already and will not again:
// there is nothing to wait for.
func closeConn(ctx context.Context, nc *nats.Conn) {
	if nc.IsClosed() {
		return
	}
	closed := make(chan struct{})
	var once sync.Once
	nc.SetClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) })
	if nc.IsClosed() {
		// It closed between the check and the handler's installation.
		return
	}
	nc.Close()
	select {
	case <-closed:
	case <-ctx.Done():
	}
}

// versionAtLeast compares dotted server versions ("2.9.10" >= "2.9.0"). A
// pre-release suffix ("2.11.0-RC.1") counts as its release.
func versionAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := range w {
		hv := 0
		if i < len(h) {
			digits := h[i]
			if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
				digits = digits[:j]
			}
			hv, _ = strconv.Atoi(digits)
		}
		wv, _ := strconv.Atoi(w[i])
		if hv != wv {
			return hv > wv
		}
	}
	return true
}
