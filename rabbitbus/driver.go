package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// Driver is a connection to a RabbitMQ broker. It implements driver.Driver,
// driver.RequestReplier and driver.GroupDeclarer.
type Driver struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	secrets []string
	caps    driver.Capabilities

	connMu    sync.Mutex
	conn      *amqp.Connection
	connReady chan struct{} // closed while conn is usable; replaced when it is lost
	corks     sync.Map      // *amqp.Connection → its *corkConn
	blocked   atomic.Pointer[chan struct{}]

	pubs      []*pubChannel // for messages that may go nowhere (events...)
	mandatory []*pubChannel // for messages that must reach a queue (commands)
	next      atomic.Uint32

	selectMu chan struct{} // held while a queue's attribute selection changes

	topoMu  sync.Mutex
	topo    *amqp.Channel
	keepers sync.Map   // dead-letter queue name → its driver.Destination, declared by this driver
	refs    *refSource // of the dead letters this driver publishes

	rrMu sync.Mutex
	rr   *requester

	mu      sync.Mutex
	subs    map[*subscription]struct{}
	closed  atomic.Bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.RequestReplier = (*Driver)(nil)
	_ driver.GroupDeclarer  = (*Driver)(nil)
)

// Open connects to the broker cfg names and declares the driver's
// exchanges. A nil cfg means the zero Config.
func Open(ctx context.Context, cfg *Config) (*Driver, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, driver.RedactError(err, driver.URLSecrets(cfg.url())...)
	}
	d := &Driver{
		cfg:       *cfg,
		opts:      cfg.Options.withDefaults(),
		log:       cfg.Logger,
		secrets:   driver.URLSecrets(cfg.url()),
		subs:      map[*subscription]struct{}{},
		closing:   make(chan struct{}),
		connReady: make(chan struct{}),
		refs:      newRefSource(),
		selectMu:  make(chan struct{}, 1),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.cfg.Heartbeat == 0 {
		d.cfg.Heartbeat = 10 * time.Second
	}
	d.caps = driver.Capabilities{
		Name:               "rabbitmq",
		Durable:            true,
		ConsumerGroups:     true,
		OrderingByKey:      true,
		Redelivery:         true,
		NativeDelay:        true,
		NativeRequestReply: true,
		Patterns:           append(driver.Patterns(), driver.Reply, driver.DeadLetter),
		MaxMessageSize:     d.opts.MaxMessageSize,
		AttributeSelect:    true,
	}
	conn, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.declareExchanges(conn); err != nil {
		_ = conn.Close()
		return nil, d.redact(err)
	}
	d.pubs = make([]*pubChannel, d.opts.PublishChannels)
	d.mandatory = make([]*pubChannel, d.opts.PublishChannels)
	for i := range d.pubs {
		d.pubs[i] = &pubChannel{d: d}
		d.mandatory[i] = &pubChannel{d: d, mandatory: true}
	}
	d.setConn(conn)
	return d, nil
}

func (d *Driver) redact(err error) error { return driver.RedactError(err, d.secrets...) }

// dial opens one AMQP connection, within ctx.
func (d *Driver) dial(ctx context.Context) (*amqp.Connection, error) {
	raw := d.cfg.url()
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("rabbitbus: URL is not a URL")
	}
	u.RawQuery = ""
	ac := amqp.Config{
		Heartbeat:  d.cfg.Heartbeat,
		Properties: amqp.NewConnectionProperties(),
		Dial:       d.cfg.Dial,
	}
	if d.cfg.ConnectionName != "" {
		ac.Properties.SetClientConnectionName(d.cfg.ConnectionName)
	}
	if d.cfg.TLS != nil {
		if ac.TLSClientConfig, err = tlsConfig(d.cfg.TLS, u.Hostname()); err != nil {
			return nil, err
		}
		if u.Scheme == "amqp" {
			u.Scheme = "amqps"
			if u.Port() == "" {
				u.Host = net.JoinHostPort(u.Hostname(), "5671")
			}
		}
	}
	if ac.Dial == nil {
		deadline, ok := ctx.Deadline()
		ac.Dial = func(network, addr string) (net.Conn, error) {
			dl := net.Dialer{Timeout: 30 * time.Second}
			c, err := dl.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if !ok {
				deadline = time.Now().Add(30 * time.Second)
			}
			// Bounds the TLS and AMQP handshakes; amqp091 clears it after.
			_ = c.SetDeadline(deadline)
			return c, nil
		}
	}
	var cork *corkConn
	dial := ac.Dial
	ac.Dial = func(network, addr string) (net.Conn, error) {
		c, err := dial(network, addr)
		if err != nil {
			return nil, err
		}
		cork = newCorkConn(c)
		return cork, nil
	}
	type result struct {
		c   *amqp.Connection
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := amqp.DialConfig(u.String(), ac)
		if err == nil {
			d.corks.Store(c, cork)
		}
		res <- result{c, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, d.redact(fmt.Errorf("rabbitbus: connect to %s: %w: %w", driver.RedactURL(u.String()), driver.ErrUnavailable, r.err))
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-res; r.c != nil {
				d.corks.Delete(r.c)
				_ = r.c.Close()
			}
		}()
		return nil, fmt.Errorf("rabbitbus: connect to %s: %w", driver.RedactURL(u.String()), ctx.Err())
	}
}

// setConn makes conn the driver's connection and watches it: when the
// broker closes it or the network drops it, the driver reconnects.
func (d *Driver) setConn(conn *amqp.Connection) {
	d.connMu.Lock()
	d.conn = conn
	close(d.connReady)
	d.connMu.Unlock()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	d.wg.Go(func() { d.watch(conn, closed, blocked) })
}

// watch follows conn's blocked notifications and its end.
func (d *Driver) watch(conn *amqp.Connection, closed <-chan *amqp.Error, blocked <-chan amqp.Blocking) {
	for {
		select {
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			if b.Active {
				ch := make(chan struct{})
				d.blocked.Store(&ch)
				d.log.Warn("rabbitbus: the broker blocked publishing on the connection", "reason", b.Reason)
			} else if old := d.blocked.Swap(nil); old != nil {
				close(*old)
				d.log.Info("rabbitbus: the broker unblocked the connection")
			}
		case err := <-closed:
			if old := d.blocked.Swap(nil); old != nil {
				close(*old)
			}
			if d.closed.Load() {
				return
			}
			d.corks.Delete(conn)
			d.log.Warn("rabbitbus: connection lost; reconnecting", "error", err)
			d.connMu.Lock()
			if d.conn == conn {
				d.connReady = make(chan struct{})
			}
			d.connMu.Unlock()
			d.reconnect()
			return
		}
	}
}

// reconnect dials until it succeeds or the driver closes. Publish channels
// and subscriptions re-open themselves on the new connection.
func (d *Driver) reconnect() {
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		go func() {
			select {
			case <-d.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		conn, err := d.dial(ctx)
		cancel()
		if err == nil {
			if err = d.declareExchanges(conn); err == nil {
				if d.closed.Load() {
					_ = conn.Close()
					return
				}
				d.setConn(conn)
				d.log.Info("rabbitbus: reconnected")
				return
			}
			_ = conn.Close()
		}
		d.log.Warn("rabbitbus: reconnect failed", "error", err)
		select {
		case <-d.closing:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// corkOf returns the corkConn under conn.
func (d *Driver) corkOf(conn *amqp.Connection) *corkConn {
	if c, ok := d.corks.Load(conn); ok {
		return c.(*corkConn)
	}
	return nil
}

// connection returns the current connection, waiting for a reconnection
// within ctx.
func (d *Driver) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		if d.closed.Load() {
			return nil, d.errClosed()
		}
		d.connMu.Lock()
		conn, ready := d.conn, d.connReady
		d.connMu.Unlock()
		select {
		case <-ready:
			if !conn.IsClosed() {
				return conn, nil
			}
			// Lost just now: the watcher replaces ready.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return nil, fmt.Errorf("rabbitbus: %w: %w", driver.ErrUnavailable, ctx.Err())
			}
		case <-d.closing:
			return nil, d.errClosed()
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbitbus: waiting for the connection: %w: %w", driver.ErrUnavailable, ctx.Err())
		}
	}
}

func (d *Driver) errClosed() error { return fmt.Errorf("rabbitbus: %w", driver.ErrClosed) }

func (d *Driver) declareExchanges(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitbus: open a channel: %w", err)
	}
	defer ch.Close()
	for _, p := range exchangePatterns {
		name := exchangeName(d.opts.Prefix, p)
		if err := ch.ExchangeDeclare(name, exchangeKind(p), true, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbitbus: declare exchange %q: %w", name, classify(err))
		}
	}
	// Delayed redelivery: PREFIX.wait routes a nacked message by its delay
	// header into a wait queue, which dead-letters it after its TTL to
	// PREFIX.requeue, where each consumer queue is bound by its own name.
	if err := ch.ExchangeDeclare(d.waitExchange(), "headers", true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitbus: declare exchange %q: %w", d.waitExchange(), classify(err))
	}
	if err := ch.ExchangeDeclare(d.requeueExchange(), "direct", true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitbus: declare exchange %q: %w", d.requeueExchange(), classify(err))
	}
	return nil
}

func (d *Driver) waitExchange() string    { return d.opts.Prefix + ".wait" }
func (d *Driver) requeueExchange() string { return d.opts.Prefix + ".requeue" }

// Capabilities reports what the driver can do.
func (d *Driver) Capabilities() driver.Capabilities { return d.caps }

// Conn returns the current AMQP connection (an escape hatch: declare your own
// topology, inspect queues). It changes after a reconnection.
func (d *Driver) Conn() *amqp.Connection {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	return d.conn
}

// ExchangeName is the exchange of pattern p.
func (d *Driver) ExchangeName(p driver.Pattern) string { return exchangeName(d.opts.Prefix, p) }

// QueueName is the queue of group on dest (or, for a dead-letter
// destination and no group, the queue that keeps its dead letters).
func (d *Driver) QueueName(dest driver.Destination, group string) (string, error) {
	if _, err := routingKey(dest); err != nil {
		return "", err
	}
	if dest.Pattern == driver.DeadLetter && group == "" {
		return keeperQueue(d.opts.Prefix, dest), nil
	}
	return groupQueue(d.opts.Prefix, dest, group)
}

// topology runs fn on the driver's declaration channel, re-opening it when a
// failed declaration (a conflicting queue) closed it.
func (d *Driver) topology(ctx context.Context, fn func(ch *amqp.Channel) error) error {
	conn, err := d.connection(ctx)
	if err != nil {
		return err
	}
	d.topoMu.Lock()
	defer d.topoMu.Unlock()
	if d.topo == nil || d.topo.IsClosed() {
		if d.topo, err = conn.Channel(); err != nil {
			return fmt.Errorf("rabbitbus: open a channel: %w", classify(err))
		}
	}
	return fn(d.topo)
}

// classify wraps an AMQP error with the driver sentinel it means.
func classify(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed:
			return &ConflictError{Reason: ae.Reason, Err: err}
		case amqp.ConnectionForced, amqp.ChannelError, amqp.FrameError, amqp.InternalError, amqp.ResourceError:
			return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return err
}

// ConflictError reports a queue or exchange that exists with other
// arguments than the driver declares (the broker's PRECONDITION_FAILED):
// Reason is the broker's account of the difference, such as "inequivalent
// arg 'x-queue-type' for queue 'eventbus.events.a.g' in vhost '/':
// received 'quorum' but current is 'classic'".
type ConflictError struct {
	Reason string
	Err    error
}

func (e *ConflictError) Error() string {
	return "exists with different arguments: " + e.Reason + " (delete it, or configure the driver as it was declared)"
}

// Unwrap returns the *amqp.Error.
func (e *ConflictError) Unwrap() error { return e.Err }

// Publish sends msgs to dest and returns once the broker confirmed every one
// (stored in every queue it was routed to). A command that no queue is bound
// to comes back unroutable and fails with an error; an event nobody
// subscribes to is confirmed and dropped, as pub/sub has it.
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if d.closed.Load() {
		return d.errClosed()
	}
	key, err := routingKey(dest)
	if err != nil {
		return err
	}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return fmt.Errorf("rabbitbus: publish to %q: %w", dest.Name, err)
	}
	if err := driver.CheckSize(msgs, d.opts.MaxMessageSize); err != nil {
		return fmt.Errorf("rabbitbus: publish to %q: %w", dest.Name, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	if dest.Pattern == driver.DeadLetter {
		if err := d.declareKeeper(ctx, dest); err != nil {
			return err
		}
	}
	pubs := make([]outgoing, len(msgs))
	exchange := d.ExchangeName(dest.Pattern)
	for i, m := range msgs {
		pubs[i] = outgoing{exchange: exchange, key: key, mandatory: dest.Pattern == driver.Command,
			pub: encode(m, persistent(dest.Pattern))}
		if dest.Pattern == driver.DeadLetter {
			pubs[i].pub.Headers[refHeader] = d.refs.next()
		}
	}
	if err := d.send(ctx, pubs); err != nil {
		return fmt.Errorf("rabbitbus: publish to %q: %w", dest.Name, err)
	}
	return nil
}

// declareKeeper declares, once per driver, the durable queue that keeps the
// messages of a dead-letter destination.
func (d *Driver) declareKeeper(ctx context.Context, dest driver.Destination) error {
	q := keeperQueue(d.opts.Prefix, dest)
	if _, ok := d.keepers.Load(q); ok {
		return nil
	}
	return d.topology(ctx, func(ch *amqp.Channel) error {
		return d.declareQueue(ch, q, dest, d.keeperSpec(dest))
	})
}

// send publishes on one of the shared confirm channels, round robin (those
// for mandatory messages when msgs are), and waits for the confirmations. A
// batch stays on one channel, in order.
func (d *Driver) send(ctx context.Context, msgs []outgoing) error {
	if b := d.blocked.Load(); b != nil {
		select {
		case <-*b:
		case <-ctx.Done():
			return fmt.Errorf("the broker blocked the connection (low on memory or disk): %w: %w", driver.ErrUnavailable, ctx.Err())
		case <-d.closing:
			return d.errClosed()
		}
	}
	pool := d.pubs
	if msgs[0].mandatory {
		pool = d.mandatory
	}
	b, err := pool[int(d.next.Add(1))%len(pool)].publish(ctx, msgs)
	if err != nil {
		return err
	}
	return b.wait(ctx, d)
}

// Close cancels every subscription (their unsettled deliveries go back to
// their queues at once), fails publishes waiting for a confirmation, and
// closes the connection, within ctx.
func (d *Driver) Close(ctx context.Context) error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(d.closing)
	d.mu.Lock()
	subs := make([]*subscription, 0, len(d.subs))
	for s := range d.subs {
		subs = append(subs, s)
	}
	d.mu.Unlock()
	for _, s := range subs {
		_ = s.close(ctx)
	}
	d.connMu.Lock()
	conn := d.conn
	d.connMu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 5*time.Second {
		deadline = time.Now().Add(5 * time.Second)
	}
	var err error
	if conn != nil && !conn.IsClosed() {
		// Past the deadline the socket is closed without the close handshake:
		// the broker requeues what was unacked either way.
		if err = conn.CloseDeadline(deadline); err != nil && (errors.Is(err, amqp.ErrClosed) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) || isTimeout(err)) {
			err = nil
		}
	}
	d.wg.Wait()
	if err != nil {
		return fmt.Errorf("rabbitbus: close: %w", err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (d *Driver) forget(s *subscription) {
	d.mu.Lock()
	delete(d.subs, s)
	d.mu.Unlock()
}
