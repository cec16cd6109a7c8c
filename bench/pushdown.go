package main

import (
	"context"
	"fmt"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// Pushdown rows: a durable group whose filter keeps one event in ten
// (Exact on an extension). Its queue is declared with the filter, a
// backlog of events is stored through the driver (every tenth of region
// eu), and the group's consumer alone is measured until it handled every
// matching event. With the filter pushed down, the broker routes only the
// matching tenth to the queue; written as Any(Exact(...)), which the bus
// never pushes down, every event travels to the process and nine in ten
// are filtered there. CPU µs/msg is per stored event.
const (
	pushdownBroker  = "RabbitMQ, 10%-selective filter"
	pushdownOnRow   = "Exact(region) pushed down (headers binding)"
	pushdownOffRow  = "Any(Exact(region)), evaluated in the bus"
	pushdownMatches = 10 // one stored event in pushdownMatches matches

	// On SNS+SQS (fauxqs), pushed down as the filter policy of the group
	// queue's SNS subscription. The emulator stores far fewer events per
	// second than RabbitMQ: the backlog is smaller.
	awsPushdownBroker    = "AWS SNS+SQS on fauxqs, 10%-selective filter"
	awsPushdownOnRow     = "Exact(region) pushed down (SNS filter policy)"
	awsPushdownPerSecond = 2000
)

func init() {
	register(Scenario{Name: pushdownOnRow, Broker: pushdownBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runRabbitPushdown(ctx, cfg, eventbus.Exact("region", "eu"))
	}})
	register(Scenario{Name: pushdownOffRow, Broker: pushdownBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runRabbitPushdown(ctx, cfg, eventbus.Any(eventbus.Exact("region", "eu")))
	}})
	register(Scenario{Name: awsPushdownOnRow, Broker: awsPushdownBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runAWSPushdown(ctx, cfg, eventbus.Exact("region", "eu"))
	}})
	register(Scenario{Name: pushdownOffRow, Broker: awsPushdownBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
		return runAWSPushdown(ctx, cfg, eventbus.Any(eventbus.Exact("region", "eu")))
	}})
}

func runRabbitPushdown(ctx context.Context, cfg Config, f eventbus.Filter) (Result, error) {
	prefix := rabbitName()
	defer rabbitCleanup(prefix)
	rcfg := &rabbitbus.Config{URL: rabbitURL(), Options: rabbitbus.Options{Prefix: prefix}}
	return runPushdown(ctx, cfg, f, "rabbit", backlogPerSecond, func() (driver.Driver, error) { return rabbitbus.Open(ctx, rcfg) })
}

func runAWSPushdown(ctx context.Context, cfg Config, f eventbus.Filter) (Result, error) {
	env := startAWS()
	defer env.close(ctx)
	return runPushdown(ctx, cfg, f, "aws", awsPushdownPerSecond, func() (driver.Driver, error) { return awsbus.Open(ctx, env.config()) })
}

// runPushdown runs a pushdown row on the drivers that open makes (one per
// bus, registered as backend), with a backlog of perSecond events per
// second of cfg.Duration unless cfg.Messages sets it.
func runPushdown(ctx context.Context, cfg Config, f eventbus.Filter, backend string, perSecond int64, open func() (driver.Driver, error)) (Result, error) {
	// consumer opens the group's subscription with f on a bus of its own.
	consumer := func(h eventbus.Handler) (*eventbus.Bus, error) {
		d, err := open()
		if err != nil {
			return nil, err
		}
		return startBus(ctx, backend, d, func(b *eventbus.Bus) error {
			return errOnly(b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", h, eventbus.WithFilter(f)))
		})
	}
	// Declare the queue and its bindings, then store the backlog.
	first, err := consumer(eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil }))
	if err != nil {
		return Result{}, fmt.Errorf("declare: %w", err)
	}
	if err := first.Close(ctx); err != nil {
		return Result{}, err
	}
	n := cfg.Messages
	if n <= 0 {
		n = int64(cfg.Duration.Seconds() * float64(perSecond))
		n = max(min(n, int64(backlogBytes/max(cfg.Size, 1))), 1000)
	}
	n -= n % pushdownMatches
	if err := fillRegions(ctx, open, payload(cfg), int(n)); err != nil {
		return Result{}, fmt.Errorf("fill: %w", err)
	}
	tr := newTracker(cfg.Size)
	tr.expect(n / pushdownMatches)
	m := startMeter(cfg)
	t0 := time.Now()
	b, err := consumer(countingHandler(tr))
	if err != nil {
		m.stop(cfg)
		return Result{}, err
	}
	defer b.Close(context.WithoutCancel(ctx))
	// Without pushdown the consumer receives ten times the events: give
	// both rows the time that takes on a loaded machine.
	drain := time.NewTimer(max(cfg.Drain, 3*time.Minute))
	defer drain.Stop()
	select {
	case <-tr.done:
	case <-drain.C:
	case <-ctx.Done():
	}
	res := Result{Messages: n, Selected: n / pushdownMatches}
	res.Allocs, res.CPU = m.stop(cfg)
	select {
	case <-tr.done:
	default:
		return res, fmt.Errorf("the consumer handled %d of %d matching events in time", tr.consumed.Load(), n/pushdownMatches)
	}
	res.Handled, res.Consume = n/pushdownMatches, tr.at.Sub(t0)
	res.Note = fmt.Sprintf("%d events stored, %d matching; %d reached the process and were filtered out there",
		n, res.Handled, b.Stats().Filtered)
	return res, nil
}

// fillRegions stores n events through the driver, 1000 per Publish, every
// pushdownMatches-th of region eu and the others of region us.
func fillRegions(ctx context.Context, open func() (driver.Driver, error), data []byte, n int) error {
	d, err := open()
	if err != nil {
		return err
	}
	defer d.Close(context.WithoutCancel(ctx))
	dest := driver.NewDestination(driver.Event, benchEventType)
	next := envelopeMaker(0, data)
	msgs := make([]*driver.Message, 0, 1000)
	for sent := 0; sent < n; sent += len(msgs) {
		msgs = msgs[:0]
		for i := range min(cap(msgs), n-sent) {
			m := next()
			m.Extensions = map[string]string{"region": "us"}
			if (sent+i)%pushdownMatches == 0 {
				m.Extensions["region"] = "eu"
			}
			msgs = append(msgs, m)
		}
		if err := d.Publish(ctx, dest, msgs); err != nil {
			return err
		}
	}
	return nil
}
