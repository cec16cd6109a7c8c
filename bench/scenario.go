package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Role says what a row is compared as within its broker.
type Role int

const (
	// RoleRaw is the broker's own client used directly: the ceiling that the
	// "vs raw" ratios divide by. One per broker.
	RoleRaw Role = iota + 1
	// RoleBus is eventbus on that broker.
	RoleBus
	// RolePeer is Watermill on that broker: the "vs Watermill" ratios divide
	// by it. One per broker.
	RolePeer
	// RoleReference is shown for context and takes part in no ratio.
	RoleReference
)

// Scenario is one row of the results: a subject measured on a broker.
type Scenario struct {
	// Name labels the row ("raw jetstream, async publish", "eventbus on
	// natsbus", "Watermill NATS JetStream"...).
	Name string
	// Broker groups rows that are compared with each other.
	Broker string
	// Role says how the row takes part in the ratios.
	Role Role
	// Run sets the broker and the subject up, measures, tears everything
	// down and returns the measurements. Throughput scenarios call
	// [throughput], latency scenarios [latency], consumer-only scenarios
	// [backlog]: each honours cfg and times only the traffic, not the setup.
	Run func(ctx context.Context, cfg Config) (Result, error)
}

// ID is the name -only matches and the testing.B sub-benchmark name.
func (s Scenario) ID() string { return s.Broker + "/" + s.Name }

var scenarios []Scenario

// register adds a scenario. Each broker's file calls it from init; rows are
// reported in registration order, files in name order.
func register(s Scenario) { scenarios = append(scenarios, s) }

// Config is the workload, the same for every scenario of a run.
type Config struct {
	// Duration is how long publishers publish (or a latency client asks).
	Duration time.Duration
	// Messages, when positive, replaces Duration: exactly this many messages
	// (or round trips) are sent. testing.B sets it to b.N.
	Messages int64
	// Publishers is the number of concurrent publishing goroutines.
	Publishers int
	// Size is the payload size in bytes.
	Size int
	// Drain bounds the wait for consumers to catch up once publishing ended.
	Drain time.Duration
	// OnStart and OnStop, when set, are called right before the first message
	// and right after the last one was handled (testing.B's timers).
	OnStart, OnStop func()
}

// DefaultConfig is the standard workload: 256-byte payloads, 16 publishers,
// 3 s of publishing per scenario.
func DefaultConfig() Config {
	return Config{Duration: 3 * time.Second, Publishers: 16, Size: 256, Drain: 30 * time.Second}
}

// Result is what one scenario measured.
type Result struct {
	// Messages is the number of messages published (each confirmed), or of
	// round trips for a latency scenario.
	Messages int64
	// Handled is the number of messages the consumers handled: Messages,
	// except on a lossy broker (core NATS drops for a slow consumer) and on
	// a selective row (Selected).
	Handled int64
	// Selected, when positive, is how many of Messages a selective row's
	// consumer is to handle (the events its filter matches).
	Selected int64
	// Publish is the time from the first publish to the last confirmation
	// (zero for a backlog scenario, which measures consumers alone).
	Publish time.Duration
	// Consume is the time from the first publish to the last message handled
	// (for a latency scenario: to the last reply).
	Consume time.Duration
	// Latencies holds every round trip of a latency scenario.
	Latencies []time.Duration
	// Allocs is the number of heap allocations of the whole process during
	// the traffic, embedded brokers included.
	Allocs uint64
	// CPU is the process's user and system CPU time during the traffic.
	CPU time.Duration
	// Note is printed under the table.
	Note string
}

// PublishRate is messages per second until the last publish was confirmed.
func (r Result) PublishRate() float64 { return rate(r.Messages, r.Publish) }

// ConsumeRate is messages per second until the last message was handled.
func (r Result) ConsumeRate() float64 { return rate(r.Handled, r.Consume) }

// AllocsPerMsg is heap allocations per message.
func (r Result) AllocsPerMsg() float64 { return per(float64(r.Allocs), r.Messages) }

// CPUPerMsg is process CPU microseconds per message.
func (r Result) CPUPerMsg() float64 {
	return per(float64(r.CPU)/float64(time.Microsecond), r.Messages)
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of the latencies, by
// the nearest-rank method.
func (r Result) Percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func per(v float64, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return v / float64(n)
}

// tracker counts what consumers handled and notes when the last expected
// message arrived. Consumers call handled from any goroutine.
type tracker struct {
	size     int
	consumed atomic.Int64
	wrong    atomic.Int64
	target   atomic.Int64
	once     sync.Once
	done     chan struct{}
	at       time.Time
	err      error
	// lossy: the broker may drop messages, so the wait for consumers ends
	// when they stop making progress, not only when all arrived.
	lossy bool
}

// lossyIdle is how long consumers of a lossy broker may make no progress
// before the remaining messages count as lost.
const lossyIdle = time.Second

func newTracker(size int) *tracker {
	t := &tracker{size: size, done: make(chan struct{})}
	t.target.Store(math.MaxInt64)
	return t
}

// handled records one handled message with its payload.
func (t *tracker) handled(data []byte) {
	if len(data) != t.size {
		t.wrong.Add(1)
	}
	if t.consumed.Add(1) >= t.target.Load() {
		t.finish()
	}
}

// expect sets how many messages the consumers must handle.
func (t *tracker) expect(n int64) {
	t.target.Store(n)
	if t.consumed.Load() >= n {
		t.finish()
	}
}

func (t *tracker) finish() { t.end(nil) }

// waitProgress waits until every expected message was handled or the
// consumers made no progress for lossyIdle, and returns how many were
// handled and when the last one was (to the polling period).
func (t *tracker) waitProgress(ctx context.Context) (int64, time.Time) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last, lastAt := t.consumed.Load(), time.Now()
	for {
		select {
		case <-t.done:
			return min(t.consumed.Load(), t.target.Load()), t.at
		case <-ctx.Done():
			return last, lastAt
		case <-tick.C:
		}
		if n := t.consumed.Load(); n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > lossyIdle {
			return last, lastAt
		}
	}
}

// fail ends the wait early: a consumer broke and will handle nothing more.
func (t *tracker) fail(err error) { t.end(err) }

func (t *tracker) end(err error) {
	t.once.Do(func() {
		t.at = time.Now()
		t.err = err
		close(t.done)
	})
}

// publisher is one publishing goroutine's calls. publish sends n messages
// (n is 1 unless batch is set, and at most batch) and returns once they are
// confirmed, or, for a pipelining raw client, once they are handed over;
// confirm then waits for every outstanding confirmation.
type publisher struct {
	publish func(ctx context.Context, n int) error
	confirm func(ctx context.Context) error
	batch   int
}

// throughput runs the standard workload: cfg.Publishers goroutines publish
// through the publishers made by newPub, for cfg.Duration (or cfg.Messages
// in all), while consumers that the scenario already started report each
// handled message to tr. It returns when tr saw every confirmed message.
func throughput(ctx context.Context, cfg Config, tr *tracker, newPub func(id int) (publisher, error)) (Result, error) {
	pubs := make([]publisher, cfg.Publishers)
	for i := range pubs {
		p, err := newPub(i)
		if err != nil {
			return Result{}, fmt.Errorf("publisher %d: %w", i, err)
		}
		pubs[i] = p
	}
	var (
		stop      atomic.Bool
		claimed   atomic.Int64
		confirmed atomic.Int64
		errOnce   sync.Once
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		stop.Store(true)
	}
	m := startMeter(cfg)
	start := time.Now()
	if cfg.Messages <= 0 {
		t := time.AfterFunc(cfg.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for _, p := range pubs {
		batch := int64(max(p.batch, 1))
		wg.Go(func() {
			var n int64
			for !stop.Load() {
				k := batch
				if cfg.Messages > 0 {
					end := claimed.Add(batch)
					if end-batch >= cfg.Messages {
						break
					}
					k = min(batch, cfg.Messages-(end-batch))
				}
				if err := p.publish(ctx, int(k)); err != nil {
					fail(err)
					break
				}
				n += k
			}
			if p.confirm != nil {
				if err := p.confirm(ctx); err != nil {
					fail(err)
				}
			}
			confirmed.Add(n)
		})
	}
	wg.Wait()
	res := Result{Messages: confirmed.Load(), Publish: time.Since(start)}
	if firstErr != nil {
		m.stop(cfg)
		return res, fmt.Errorf("publish: %w", firstErr)
	}
	tr.expect(res.Messages)
	if tr.lossy {
		var at time.Time
		res.Handled, at = tr.waitProgress(ctx)
		res.Allocs, res.CPU = m.stop(cfg)
		res.Consume = at.Sub(start)
		if lost := res.Messages - res.Handled; lost > 0 {
			res.Note = fmt.Sprintf("%d of %d messages lost (core NATS drops for a slow consumer); consume rate counts those handled", lost, res.Messages)
		}
	} else {
		drain := time.NewTimer(cfg.Drain)
		defer drain.Stop()
		select {
		case <-tr.done:
		case <-drain.C:
		case <-ctx.Done():
		}
		res.Allocs, res.CPU = m.stop(cfg)
		select {
		case <-tr.done:
		default:
			return res, fmt.Errorf("consumers handled %d of %d messages within %v after publishing ended", tr.consumed.Load(), res.Messages, cfg.Drain)
		}
		res.Handled = res.Messages
		res.Consume = tr.at.Sub(start)
	}
	if tr.err != nil {
		return res, fmt.Errorf("consumer: %w", tr.err)
	}
	if n := tr.wrong.Load(); n > 0 {
		return res, fmt.Errorf("%d messages arrived with a payload other than %d bytes", n, tr.size)
	}
	return res, nil
}

// backlogPerSecond sizes a backlog scenario: this many messages per second
// of cfg.Duration, and at most backlogBytes of payload.
const (
	backlogPerSecond = 50_000
	backlogBytes     = 256 << 20
)

// backlog measures consumers alone. fill stores the messages first (not
// measured); then start launches the consumers, which report to tr; the
// consume rate is the messages over the time from start until the last was
// handled. The publish rate is left zero.
func backlog(ctx context.Context, cfg Config, fill func(ctx context.Context, n int) error,
	start func(ctx context.Context, tr *tracker) (stop func(), err error)) (Result, error) {
	n := cfg.Messages
	if n <= 0 {
		n = int64(cfg.Duration.Seconds() * backlogPerSecond)
		n = max(min(n, int64(backlogBytes/max(cfg.Size, 1))), 1000)
	}
	if err := fill(ctx, int(n)); err != nil {
		return Result{}, fmt.Errorf("fill: %w", err)
	}
	tr := newTracker(cfg.Size)
	tr.expect(n)
	m := startMeter(cfg)
	t0 := time.Now()
	stop, err := start(ctx, tr)
	if err != nil {
		m.stop(cfg)
		return Result{}, err
	}
	defer stop()
	drain := time.NewTimer(cfg.Drain)
	defer drain.Stop()
	select {
	case <-tr.done:
	case <-drain.C:
	case <-ctx.Done():
	}
	res := Result{Messages: n}
	res.Allocs, res.CPU = m.stop(cfg)
	select {
	case <-tr.done:
	default:
		return res, fmt.Errorf("consumers handled %d of %d stored messages within %v", tr.consumed.Load(), n, cfg.Drain)
	}
	if tr.err != nil {
		return res, fmt.Errorf("consumer: %w", tr.err)
	}
	res.Handled, res.Consume = n, tr.at.Sub(t0)
	if w := tr.wrong.Load(); w > 0 {
		return res, fmt.Errorf("%d messages arrived with a payload other than %d bytes", w, tr.size)
	}
	return res, nil
}

// latency runs clients goroutines doing roundTrip back to back (it must be
// safe for concurrent use) for cfg.Duration, after a short warm-up of each,
// and records every round trip of every client; cfg.Messages, when set,
// counts them all.
func latency(ctx context.Context, cfg Config, clients int, roundTrip func(ctx context.Context) error) (Result, error) {
	clients = max(clients, 1)
	warm := func() error {
		for range 200 {
			if err := roundTrip(ctx); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		return nil
	}
	per := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { errs[i] = warm() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	capacity := cfg.Messages
	if capacity <= 0 {
		capacity = 1 << 16
	}
	var claimed atomic.Int64
	m := startMeter(cfg)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for i := range clients {
		wg.Go(func() {
			lat := make([]time.Duration, 0, capacity/int64(clients)+1)
			defer func() { per[i] = lat }()
			for {
				if cfg.Messages > 0 {
					if claimed.Add(1) > cfg.Messages {
						return
					}
				} else if len(lat)&63 == 0 && time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				if err := roundTrip(ctx); err != nil {
					errs[i] = fmt.Errorf("round trip %d of client %d: %w", len(lat)+1, i, err)
					return
				}
				lat = append(lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lat []time.Duration
	for _, l := range per {
		lat = append(lat, l...)
	}
	res := Result{Messages: int64(len(lat)), Handled: int64(len(lat)), Publish: elapsed, Consume: elapsed, Latencies: lat}
	res.Allocs, res.CPU = m.stop(cfg)
	return res, errors.Join(errs...)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := make([]time.Duration, len(ds))
	copy(s, ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// meter measures allocations and CPU time of the whole process.
type meter struct {
	mallocs uint64
	cpu     time.Duration
}

func startMeter(cfg Config) meter {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := meter{mallocs: ms.Mallocs, cpu: processCPU()}
	if cfg.OnStart != nil {
		cfg.OnStart()
	}
	return m
}

func (m meter) stop(cfg Config) (allocs uint64, cpu time.Duration) {
	if cfg.OnStop != nil {
		cfg.OnStop()
	}
	cpu = processCPU() - m.cpu
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs - m.mallocs, cpu
}

// processCPU is the user plus system CPU time the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// payload returns a Size-byte payload.
func payload(cfg Config) []byte {
	p := make([]byte, cfg.Size)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}
