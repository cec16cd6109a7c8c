package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/shop"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

// demoSKU and demoCustomer are what the demo's orders buy and who pays.
const (
	demoSKU      = "book-42"
	demoCustomer = "alice"
)

type demoFlags struct {
	orders      int
	failureRate float64
	dataDir     string
}

func newDemoCmd() *cobra.Command {
	df := &demoFlags{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the e-commerce order saga end to end on the embedded default, with live progress and a summary",
		Long: "Runs orders through the order saga — reserve inventory, authorize the payment, arrange\n" +
			"shipping — on an in-process NATS server with JetStream and a SQLite saga store; nothing\n" +
			"to install. The payments of a share of the orders (--failure-rate) are declined, and\n" +
			"their reservations are compensated. Each saga's steps print as their lifecycle events\n" +
			"arrive; a summary follows: completed, compensated and failed sagas, their durations,\n" +
			"and a check of the shop's stock and payments. With --data the server's files and the\n" +
			"saga store stay in that directory, for \"eventbus saga list --store sqlite:DIR/saga.db\".",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if df.orders < 1 || df.orders > 10000 {
				return usagef("--orders %d out of range; give 1 to 10000", df.orders)
			}
			if df.failureRate < 0 || df.failureRate > 1 {
				return usagef("--failure-rate %g out of range; give 0 to 1", df.failureRate)
			}
			return runDemo(cmd.Context(), df, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&df.orders, "orders", 10, "number of orders")
	f.Float64Var(&df.failureRate, "failure-rate", 0.2, "share of the orders whose payment is declined, 0 to 1")
	f.StringVar(&df.dataDir, "data", "", "directory for the server's files and the saga store, kept after the run (default: a temporary directory, removed)")
	return cmd
}

// declined tells whether order i of n is declined at rate: exactly
// round(n*rate) orders are, spread evenly, so that a run is reproducible.
func declined(i int, rate float64) bool {
	return int(float64(i+1)*rate+0.5) > int(float64(i)*rate+0.5)
}

func runDemo(ctx context.Context, df *demoFlags, stdout, stderr io.Writer) (err error) {
	dir := df.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "eventbus-demo-")
		if err != nil {
			return fmt.Errorf("cannot create a temporary directory: %w; set $TMPDIR to a writable directory, or give --data", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w; give --data a directory you can write", dir, err)
	}
	store, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "saga.db"), nil)
	if err != nil {
		return fmt.Errorf("cannot open the saga store in %s: %w; give --data a directory you can write", dir, err)
	}
	defer store.Close()
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(filepath.Join(dir, "nats")), &eventbus.Options{Source: "eventbus-demo"})
	if err != nil {
		return fmt.Errorf("cannot start the embedded server: %w; give --data a directory that no other server uses", err)
	}
	orc, err := saga.NewOrchestrator(bus, store, &saga.Options{PollInterval: 100 * time.Millisecond})
	if err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return err
	}
	if err := orc.Register(shop.Definition()); err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return err
	}
	const unitPrice = 19_99
	initialStock := 3 * df.orders
	orders := make([]shop.Order, df.orders)
	decline := map[string]bool{}
	// Saga ids name the run (to the millisecond), so that runs on one
	// --data do not collide.
	now := time.Now().UTC()
	run := now.Format("150405") + fmt.Sprintf("%03d", now.Nanosecond()/1e6)
	for i := range orders {
		orders[i] = shop.Order{ID: fmt.Sprintf("order-%s-%04d", run, i+1), Customer: demoCustomer, SKU: demoSKU, Quantity: 1 + i%3}
		orders[i].Amount = orders[i].Quantity * unitPrice
		decline[orders[i].ID] = declined(i, df.failureRate)
	}
	s := shop.New(map[string]int{demoSKU: initialStock}, map[string]int{demoCustomer: 3 * unitPrice * df.orders}, &shop.Options{
		Decline: func(o shop.Order) bool { return decline[o.ID] },
	})
	if err := s.Participants(bus, store); err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return err
	}
	pr := newDemoProgress(stdout, bus)
	if _, err := bus.SubscribeEvents(ctx, lifecycleTypes, "", eventbus.HandlerFunc(pr.handle)); err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return err
	}
	if err := bus.Start(ctx); err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("cannot start the bus: %w", err)
	}
	defer func() { err = closeBus(ctx, bus, err) }()
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- orc.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()

	fmt.Fprintf(stdout, "%d orders through the order saga (reserve inventory → authorize payment → arrange shipping), %d declined at the payment\n",
		df.orders, countTrue(decline))
	began := pr.began
	ids := make([]string, len(orders))
	for i, o := range orders {
		id, err := orc.Start(ctx, shop.SagaName, o, saga.WithID(o.ID))
		if err != nil {
			return fmt.Errorf("start saga of %s: %w", o.ID, err)
		}
		ids[i] = id
	}
	ins := make([]*saga.Instance, len(ids))
	for i, id := range ids {
		if ins[i], err = shop.Wait(ctx, orc, id); err != nil {
			return err
		}
	}
	took := time.Since(began)
	// Lifecycle events travel on their own: let the last ones print
	// before the summary, within a bound.
	pr.waitEnded(ctx, ids, 5*time.Second)

	counts := map[saga.State]int{}
	var durations []time.Duration
	wantReserved, wantHeld := 0, 0
	for i, in := range ins {
		counts[in.State]++
		durations = append(durations, in.Updated.Sub(in.Created))
		if in.State == saga.Completed {
			wantReserved += orders[i].Quantity
			wantHeld += orders[i].Amount
		}
	}
	slices.Sort(durations)
	fmt.Fprintf(stdout, "\nsummary: %d orders in %s: %d completed, %d compensated, %d failed\n",
		len(ins), took.Round(time.Millisecond), counts[saga.Completed], counts[saga.Compensated], counts[saga.Failed])
	fmt.Fprintf(stdout, "saga durations: min %s, median %s, p95 %s, max %s\n",
		round(durations[0]), round(durations[len(durations)/2]), round(durations[(len(durations)*95+99)/100-1]), round(durations[len(durations)-1]))
	stock, reserved := s.Stock(demoSKU)
	_, held := s.Balance(demoCustomer)
	fmt.Fprintf(stdout, "shop: %d of %d books reserved, %d.%02d authorized", reserved, initialStock, held/100, held%100)
	if stock+reserved != initialStock || reserved != wantReserved || held != wantHeld {
		fmt.Fprintln(stdout)
		return fmt.Errorf("the shop's books disagree with the sagas: %d reserved and %d.%02d authorized, want %d and %d.%02d; "+
			"this is a defect, please report it with the output above", reserved, held/100, held%100, wantReserved, wantHeld/100, wantHeld%100)
	}
	fmt.Fprintln(stdout, ": every compensated order left stock and money as they were")
	if df.dataDir != "" {
		fmt.Fprintf(stdout, "the sagas are kept in %s: eventbus saga list --store sqlite:%s\n", dir, filepath.ToSlash(filepath.Join(dir, "saga.db")))
	}
	if counts[saga.Failed] > 0 {
		return fmt.Errorf("%d sagas failed to compensate; look at them with eventbus saga show ID --store sqlite:%s", counts[saga.Failed], filepath.ToSlash(filepath.Join(dir, "saga.db")))
	}
	return nil
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

var lifecycleTypes = []string{saga.EventStarted, saga.EventStepCompleted, saga.EventStepFailed, saga.EventStepCompensated,
	saga.EventCompleted, saga.EventCompensating, saga.EventCompensated, saga.EventFailed}

// demoProgress prints each saga's lifecycle events as they arrive, once each
// (they are delivered at least once).
type demoProgress struct {
	w     io.Writer
	bus   *eventbus.Bus
	began time.Time

	mu    sync.Mutex
	seen  map[string]bool
	ended map[string]bool
	cond  chan struct{} // closed and replaced on each ended saga
}

func newDemoProgress(w io.Writer, bus *eventbus.Bus) *demoProgress {
	return &demoProgress{w: w, bus: bus, began: time.Now(), seen: map[string]bool{}, ended: map[string]bool{}, cond: make(chan struct{})}
}

func (p *demoProgress) handle(_ context.Context, m *eventbus.Message) error {
	var ev saga.LifecycleEvent
	if err := p.bus.Decode(m, &ev); err != nil {
		return eventbus.Permanent(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[m.ID] {
		return nil
	}
	p.seen[m.ID] = true
	var what string
	switch m.Type {
	case saga.EventStarted:
		what = "started"
	case saga.EventStepCompleted:
		what = "✓ " + ev.Step
	case saga.EventStepFailed:
		what = "✗ " + ev.Step + ": " + ev.Error
	case saga.EventCompensating:
		what = "compensating"
	case saga.EventStepCompensated:
		what = "↺ " + ev.Step + " undone"
	case saga.EventCompleted:
		what = "COMPLETED"
	case saga.EventCompensated:
		what = "COMPENSATED"
	case saga.EventFailed:
		what = "FAILED: " + ev.Error
	}
	fmt.Fprintf(p.w, "%8s  %-22s %s\n", round(time.Since(p.began)), ev.SagaID, what)
	switch m.Type {
	case saga.EventCompleted, saga.EventCompensated, saga.EventFailed:
		p.ended[ev.SagaID] = true
		close(p.cond)
		p.cond = make(chan struct{})
	}
	return nil
}

// waitEnded waits until the end events of ids printed, or for at most
// bound.
func (p *demoProgress) waitEnded(ctx context.Context, ids []string, bound time.Duration) {
	t := time.NewTimer(bound)
	defer t.Stop()
	for {
		p.mu.Lock()
		all := true
		for _, id := range ids {
			all = all && p.ended[id]
		}
		cond := p.cond
		p.mu.Unlock()
		if all {
			return
		}
		select {
		case <-cond:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
