package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
)

// Filter rows: the "eventbus on membus" row again, every message a JSON
// payload with a subject, consumed without a filter and with filters that
// match every message, so that the rows differ only by what evaluating the
// filter costs (a filter that dropped messages would also save the
// handler). They form a group of their own, compared with its no-filter row
// by the targets.
const (
	filterBroker    = "in-memory, filters"
	filterNoneRow   = "eventbus on membus, no filter"
	filterTypeRow   = "exact type (what the destination already selects)"
	filterAttrRow   = "attribute filter: all(exact source, prefix subject)"
	filterSQLRow    = "CESQL: source = 'bench' AND INT(DATA('amount')) > 100"
	filterSQLPipRow = "CESQL filter + one-step pipeline (set_extension)"
)

// The filters of the rows; every message of the run matches each.
var (
	attrFilter = eventbus.All(eventbus.Exact("source", "bench"), eventbus.Prefix("subject", "orders/"))
	sqlFilter  = eventbus.SQL("source = 'bench' AND INT(DATA('amount')) > 100")
)

func init() {
	for _, r := range []struct {
		name string
		opts func() []eventbus.SubscribeOption
	}{
		{filterNoneRow, func() []eventbus.SubscribeOption { return nil }},
		{filterTypeRow, func() []eventbus.SubscribeOption {
			return []eventbus.SubscribeOption{eventbus.WithFilter(eventbus.Exact("type", benchEventType))}
		}},
		{filterAttrRow, func() []eventbus.SubscribeOption {
			return []eventbus.SubscribeOption{eventbus.WithFilter(attrFilter)}
		}},
		{filterSQLRow, func() []eventbus.SubscribeOption {
			return []eventbus.SubscribeOption{eventbus.WithFilter(sqlFilter)}
		}},
		{filterSQLPipRow, func() []eventbus.SubscribeOption {
			return []eventbus.SubscribeOption{eventbus.WithFilter(sqlFilter),
				eventbus.WithPipeline(eventbus.NewPipeline(eventbus.SetExtension("tier", "gold")))}
		}},
	} {
		register(Scenario{Name: r.name, Broker: filterBroker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return runMembusFiltered(ctx, cfg, r.opts()...)
		}})
	}
	registerTarget(filterTarget("attribute filter CPU µs/msg ≤ 1.15× no filter", filterAttrRow))
	registerTarget(filterTarget("CESQL filter + pipeline CPU µs/msg ≤ 1.15× no filter", filterSQLPipRow))
}

// filterTarget compares the CPU time per message of row with the no-filter
// row's: on a busy machine the rates of rows run seconds apart move by tens
// of percent, the CPU per message much less.
func filterTarget(goal, row string) Target {
	return Target{Broker: filterBroker, Goal: goal, Measure: func(g *group) (string, bool, bool) {
		a, b := g.name(row), g.name(filterNoneRow)
		if a == nil || b == nil || b.res.CPUPerMsg() == 0 {
			return "", false, false
		}
		r := a.res.CPUPerMsg() / b.res.CPUPerMsg()
		return fmt.Sprintf("%.2f×", r), r <= 1.15, true
	}}
}

// runMembusFiltered is runMembusBus with subscription options, publishing
// JSON orders with a subject.
func runMembusFiltered(ctx context.Context, cfg Config, opts ...eventbus.SubscribeOption) (Result, error) {
	b := eventbus.New(&eventbus.Options{Source: "bench"})
	defer b.Close(context.WithoutCancel(ctx))
	if err := b.Register("mem", membus.New(nil)); err != nil {
		return Result{}, err
	}
	tr := newTracker(cfg.Size)
	if _, err := b.SubscribeEvents(context.Background(), []string{benchEventType}, "bench", countingHandler(tr), opts...); err != nil {
		return Result{}, err
	}
	if err := b.Start(ctx); err != nil {
		return Result{}, err
	}
	data := orderPayload(cfg.Size)
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		return publisher{publish: func(ctx context.Context, _ int) error {
			return b.PublishEvent(ctx, &eventbus.Message{Type: benchEventType, Subject: "orders/eu", Data: data})
		}}, nil
	})
}

// orderPayload is a JSON object of size bytes (at least 32) with an amount
// of 250, padded.
func orderPayload(size int) []byte {
	const head, tail = `{"amount":250,"pad":"`, `"}`
	n := max(size-len(head)-len(tail), 0)
	return []byte(head + strings.Repeat("x", n) + tail)
}
