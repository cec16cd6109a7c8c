package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
)

// Driver is a connection to Redis. It implements driver.Driver and
// driver.GroupDeclarer.
type Driver struct {
	rdb     redis.UniversalClient
	owned   bool // Close closes rdb
	opts    Options
	log     *slog.Logger
	name    string // consumer name prefix, unique per Driver
	secrets []string
	caps    driver.Capabilities

	pipe *pipeliner

	mu     sync.Mutex
	subs   map[closer]struct{}
	seq    int
	closed bool
	done   chan struct{}
}

type closer interface {
	Close(ctx context.Context) error
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.GroupDeclarer = (*Driver)(nil)
)

// Open connects to Redis as cfg says (nil means the defaults), checks that
// the server answers and has streams (Redis 6.2 or later), and returns the
// driver. ctx bounds the connection.
func Open(ctx context.Context, cfg *Config) (*Driver, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	uo, err := cfg.universalOptions()
	if err != nil {
		return nil, driver.RedactError(err, cfg.secrets()...)
	}
	rdb := redis.NewUniversalClient(uo)
	d, err := newDriver(ctx, rdb, &cfg.Options, true)
	if err != nil {
		_ = rdb.Close()
		return nil, driver.RedactError(err, cfg.secrets()...)
	}
	d.secrets = cfg.secrets()
	return d, nil
}

// New wraps a go-redis client made by the caller, for connection options
// that Config does not cover. Closing the driver leaves rdb open. The client
// must speak RESP2 or RESP3 and may be a standalone, Sentinel (failover) or
// Cluster client.
func New(ctx context.Context, rdb redis.UniversalClient, opts *Options) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return newDriver(ctx, rdb, opts, false)
}

func newDriver(ctx context.Context, rdb redis.UniversalClient, opts *Options, owned bool) (*Driver, error) {
	o := opts.withDefaults()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redisbus: connect: %w", classify(err))
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	d := &Driver{
		rdb:   rdb,
		owned: owned,
		opts:  o,
		log:   o.Logger,
		name:  hex.EncodeToString(id[:]),
		subs:  make(map[closer]struct{}),
		done:  make(chan struct{}),
		caps: driver.Capabilities{
			Name:           "redis",
			Durable:        true,
			ConsumerGroups: true,
			OrderingByKey:  true,
			Redelivery:     true,
			NativeDelay:    true,
			Patterns: []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Stream,
				driver.Broadcast, driver.Reply, driver.DeadLetter},
			MaxMessageSize: o.MaxMessageSize,
		},
	}
	d.pipe = newPipeliner(rdb, o.PipelineWorkers)
	return d, nil
}

// Capabilities reports what the driver can do; see the package documentation.
func (d *Driver) Capabilities() driver.Capabilities { return d.caps }

// Client returns the go-redis client, for what the driver does not cover.
func (d *Driver) Client() redis.UniversalClient { return d.rdb }

// StreamKey returns the key of the stream that holds dest's messages (a
// Pub/Sub channel for a broadcast destination). The destination's name is
// a hash tag, so that its stream and anything beside it share a Cluster slot.
func (d *Driver) StreamKey(dest driver.Destination) string {
	if dest.Pattern == driver.Broadcast {
		return d.opts.KeyPrefix + ":" + dest.Name
	}
	return d.opts.KeyPrefix + ":{" + dest.Name + "}"
}

// checkDest refuses destination names that would break the key layout.
func checkDest(dest driver.Destination) error {
	if dest.Name == "" {
		return fmt.Errorf("redisbus: empty destination name: %w", driver.ErrInvalid)
	}
	if strings.ContainsFunc(dest.Name, func(r rune) bool { return r == '{' || r == '}' || r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("redisbus: destination %q: braces, white space and control characters are not allowed: %w", dest.Name, driver.ErrInvalid)
	}
	if dest.Pattern < driver.Event || dest.Pattern > driver.DeadLetter {
		return fmt.Errorf("redisbus: destination %q: unknown pattern %v: %w", dest.Name, dest.Pattern, driver.ErrUnsupported)
	}
	return nil
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Publish appends msgs to dest's stream (XADD, MAXLEN ~ Options.MaxLen)
// and returns once Redis stored all of them; a broadcast is PUBLISHed on
// dest's channel. Concurrent calls share pipelines.
func (d *Driver) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if d.isClosed() {
		return fmt.Errorf("redisbus: publish to %q: %w", dest.Name, driver.ErrClosed)
	}
	if err := checkDest(dest); err != nil {
		return err
	}
	if err := driver.CheckSize(msgs, d.opts.MaxMessageSize); err != nil {
		return fmt.Errorf("redisbus: publish to %q: %w", dest.Name, err)
	}
	if err := driver.CheckEnvelope(msgs); err != nil {
		return fmt.Errorf("redisbus: publish to %q: %w", dest.Name, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	key := d.StreamKey(dest)
	cmds := make([]redis.Cmder, 0, len(msgs)+1)
	if dest.Pattern == driver.Broadcast {
		for _, m := range msgs {
			payload, err := encodeBroadcast(m)
			if err != nil {
				return fmt.Errorf("redisbus: publish to %q: %w", dest.Name, err)
			}
			cmds = append(cmds, redis.NewIntCmd(ctx, "publish", key, payload))
		}
	} else {
		maxLen := d.opts.MaxLen
		switch dest.Pattern {
		case driver.DeadLetter:
			maxLen = d.opts.DeadLetterMaxLen
		case driver.Reply:
			maxLen = replyMaxLen
		}
		// One slab of arguments and one of values for the whole batch, sized
		// for an event with id, source, type, time and data (6 fields after
		// the 6 arguments of XADD); append grows them for more.
		b := argBuilder{args: make([]any, 0, len(msgs)*20), vals: make([]string, 0, len(msgs)*4),
			times: make([]time.Time, 0, len(msgs)), data: make([]dataArg, 0, len(msgs))}
		keyArg, maxLenArg := any(key), any(maxLen)
		for _, m := range msgs {
			start := len(b.args)
			b.args = append(b.args, "xadd", keyArg)
			if maxLen > 0 {
				b.args = append(b.args, "maxlen", "~", maxLenArg)
			}
			b.args = append(b.args, "*")
			b.appendEntry(m)
			cmds = append(cmds, redis.NewStringCmd(ctx, b.args[start:len(b.args):len(b.args)]...))
		}
		if dest.Pattern == driver.Reply {
			cmds = append(cmds, redis.NewBoolCmd(ctx, "pexpire", key, replyTTL.Milliseconds()))
		}
	}
	if err := d.pipe.do(ctx, cmds); err != nil {
		return fmt.Errorf("redisbus: publish to %q: %w", dest.Name, d.classify(err))
	}
	return nil
}

// Subscribe opens a subscription on dest: a member of a consumer group on
// the destination's stream (a private group for an empty opts.Group), or a
// Pub/Sub subscription for a broadcast destination.
func (d *Driver) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	if err := checkDest(dest); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", dest.Name, driver.ErrClosed)
	}
	d.seq++
	consumer := d.name + "-" + strconv.Itoa(d.seq)
	d.mu.Unlock()

	var (
		sub closer
		err error
	)
	if dest.Pattern == driver.Broadcast {
		if opts.Durable {
			return nil, fmt.Errorf("redisbus: subscribe to %q: broadcasts travel on Pub/Sub, which keeps nothing: %w", dest.Name, driver.ErrUnsupported)
		}
		sub, err = d.subscribeChannel(ctx, dest)
	} else {
		sub, err = d.subscribeStream(ctx, dest, consumer, opts)
	}
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = sub.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", dest.Name, driver.ErrClosed)
	}
	d.subs[sub] = struct{}{}
	d.mu.Unlock()
	return sub.(driver.Subscription), nil
}

func (d *Driver) forget(sub closer) {
	d.mu.Lock()
	delete(d.subs, sub)
	d.mu.Unlock()
}

// DeclareGroup creates opts.Group on dest's stream (XGROUP CREATE ...
// MKSTREAM, at the end of the stream, or at its start with StartFirst)
// without consuming. Redis keeps every group, so Durable changes nothing.
func (d *Driver) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if err := checkDest(dest); err != nil {
		return err
	}
	if d.isClosed() {
		return fmt.Errorf("redisbus: declare group on %q: %w", dest.Name, driver.ErrClosed)
	}
	if dest.Pattern == driver.Broadcast {
		return fmt.Errorf("redisbus: declare group on %q: broadcasts travel on Pub/Sub, which keeps nothing: %w", dest.Name, driver.ErrUnsupported)
	}
	if opts.Group == "" {
		return fmt.Errorf("redisbus: declare group on %q: a declared group needs a name: %w", dest.Name, driver.ErrUnsupported)
	}
	if err := d.createGroup(ctx, d.StreamKey(dest), opts.Group, opts.StartAt); err != nil {
		return fmt.Errorf("redisbus: declare group %q on %q: %w", opts.Group, dest.Name, err)
	}
	return nil
}

// createGroup creates a group unless it exists.
func (d *Driver) createGroup(ctx context.Context, key, group string, start driver.StartPosition) error {
	at := "$"
	if start == driver.StartFirst {
		at = "0"
	}
	err := d.rdb.XGroupCreateMkStream(ctx, key, group, at).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return d.classify(err)
	}
	return nil
}

// Close closes every subscription (giving back what they hold), stops the
// pipelines and closes the connection it opened, within ctx.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.done)
	subs := make([]closer, 0, len(d.subs))
	for s := range d.subs {
		subs = append(subs, s)
	}
	d.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, s := range subs {
		wg.Go(func() {
			if err := s.Close(ctx); err != nil && !errors.Is(err, driver.ErrClosed) {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	d.pipe.close()
	if d.owned {
		if err := d.rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			errs = append(errs, fmt.Errorf("redisbus: close: %w", err))
		}
	}
	return driver.RedactError(errors.Join(errs...), d.secrets...)
}

// classify wraps err so that it matches the driver sentinels: ErrClosed for
// a closed client, ErrUnavailable for a lost or unreachable server.
func (d *Driver) classify(err error) error {
	return driver.RedactError(classify(err), d.secrets...)
}

func classify(err error) error {
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.ErrClosed), errors.Is(err, driver.ErrClosed):
		return fmt.Errorf("%w: %w", driver.ErrClosed, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		strings.HasPrefix(err.Error(), "LOADING"), strings.HasPrefix(err.Error(), "CLUSTERDOWN"),
		strings.HasPrefix(err.Error(), "TRYAGAIN"), strings.HasPrefix(err.Error(), "MASTERDOWN"):
		return fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	return err
}

// pipeliner sends the commands of concurrent callers together: each worker
// takes every request waiting and runs them as one pipeline, so that a lone
// caller waits for one round trip and many callers share theirs.
type pipeliner struct {
	rdb   redis.UniversalClient
	queue chan *pipeRequest
	stop  chan struct{}
	wg    sync.WaitGroup
}

type pipeRequest struct {
	cmds []redis.Cmder
	done chan error
	then func(error) // instead of done, for a request nobody waits for
}

func (r *pipeRequest) finish(err error) {
	if r.then != nil {
		r.then(err)
		return
	}
	r.done <- err
}

// maxPipeline bounds the commands of one pipeline.
const maxPipeline = 1024

func newPipeliner(rdb redis.UniversalClient, workers int) *pipeliner {
	p := &pipeliner{rdb: rdb, queue: make(chan *pipeRequest, 4096), stop: make(chan struct{})}
	for range workers {
		p.wg.Go(p.run)
	}
	return p
}

var requestPool = sync.Pool{New: func() any { return &pipeRequest{done: make(chan error, 1)} }}

// do runs cmds and returns the first error of any of them. When ctx ends
// first the commands may still run.
func (p *pipeliner) do(ctx context.Context, cmds []redis.Cmder) error {
	r := requestPool.Get().(*pipeRequest)
	r.cmds = cmds
	select {
	case p.queue <- r:
	case <-p.stop:
		return driver.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		r.cmds = nil
		requestPool.Put(r)
		return err
	case <-ctx.Done():
		return ctx.Err() // r is abandoned to the worker
	case <-p.stop:
		return driver.ErrClosed
	}
}

// start queues cmds without waiting for them: then is called with the
// first error of any of them once they ran, or with ErrClosed when the
// pipeliner stopped first. It returns an error, and then is not called,
// when cmds could not be queued.
func (p *pipeliner) start(ctx context.Context, cmds []redis.Cmder, then func(error)) error {
	r := &pipeRequest{cmds: cmds, then: then}
	select {
	case p.queue <- r:
		return nil
	case <-p.stop:
		return driver.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeliner) run() {
	batch := make([]*pipeRequest, 0, 64)
	for {
		select {
		case <-p.stop:
			p.failQueued()
			return
		case r := <-p.queue:
			batch = append(batch[:0], r)
			n := len(r.cmds)
		more:
			for n < maxPipeline {
				select {
				case r := <-p.queue:
					batch = append(batch, r)
					n += len(r.cmds)
				default:
					break more
				}
			}
			p.exec(batch)
		}
	}
}

// pipeTimeout bounds one pipeline when Redis does not answer.
const pipeTimeout = 30 * time.Second

func (p *pipeliner) exec(batch []*pipeRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), pipeTimeout)
	defer cancel()
	if len(batch) == 1 && len(batch[0].cmds) == 1 {
		c := batch[0].cmds[0]
		_ = p.rdb.Process(ctx, c)
		batch[0].finish(c.Err())
		return
	}
	pipe := p.rdb.Pipeline()
	for _, r := range batch {
		for _, c := range r.cmds {
			_ = pipe.Process(ctx, c)
		}
	}
	_, _ = pipe.Exec(ctx)
	for _, r := range batch {
		var err error
		for _, c := range r.cmds {
			if err = c.Err(); err != nil {
				break
			}
		}
		r.finish(err)
	}
}

func (p *pipeliner) failQueued() {
	for {
		select {
		case r := <-p.queue:
			r.finish(driver.ErrClosed)
		default:
			return
		}
	}
}

func (p *pipeliner) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
	p.failQueued()
}
