// Command ecommerce runs the order saga of an online shop on the embedded
// default: an in-process NATS server with JetStream and a SQLite saga store,
// nothing to install.
//
// An order reserves inventory, authorizes the payment and arranges shipping,
// three participant services driven by a saga orchestrator. With
// -fail-payment the payment is declined, and the inventory reservation is
// compensated (released).
//
//	go run ./examples/ecommerce
//	go run ./examples/ecommerce -fail-payment
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/shop"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

func main() {
	failPayment := flag.Bool("fail-payment", false, "decline the payment, so that the reservation is compensated")
	dataDir := flag.String("data", "", "directory for JetStream's files and the saga store (default: a temporary directory, removed at exit)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *dataDir, *failPayment); err != nil {
		fmt.Fprintln(os.Stderr, "ecommerce:", err)
		os.Exit(1)
	}
}

func printShop(s *shop.Shop, prefix string) {
	stock, reserved := s.Stock("book-42")
	balance, held := s.Balance("alice")
	fmt.Printf("%s stock %d, reserved %d; customer balance %d, authorized %d\n", prefix, stock, reserved, balance, held)
}

func run(ctx context.Context, dataDir string, failPayment bool) error {
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "ecommerce-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dataDir = dir
	} else if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	store, err := sqlstore.OpenSQLite(ctx, filepath.Join(dataDir, "saga.db"), nil)
	if err != nil {
		return err
	}
	defer store.Close()
	// The embedded default: a NATS server with JetStream file storage in
	// this process. Point the same code at a NATS cluster with a nats:// URL.
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(filepath.Join(dataDir, "nats")), &eventbus.Options{Source: "ecommerce"})
	if err != nil {
		return err
	}

	orc, err := saga.NewOrchestrator(bus, store, &saga.Options{PollInterval: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	if err := orc.Register(shop.Definition()); err != nil {
		return err
	}
	s := shop.New(map[string]int{"book-42": 10}, map[string]int{"alice": 50_00}, &shop.Options{
		Decline: func(shop.Order) bool { return failPayment },
		Log:     func(service, line string) { fmt.Printf("  %-9s %s\n", service, line) },
	})
	if err := s.Participants(bus, store); err != nil {
		return err
	}
	// Another service following the orders' lifecycle.
	events := []string{saga.EventStarted, saga.EventStepCompleted, saga.EventStepFailed, saga.EventStepCompensated,
		saga.EventCompleted, saga.EventCompensating, saga.EventCompensated, saga.EventFailed}
	if _, err := bus.SubscribeEvents(ctx, events, "", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		var ev saga.LifecycleEvent
		if err := bus.Decode(m, &ev); err != nil {
			return eventbus.Permanent(err)
		}
		fmt.Printf("  event    %-22s %s\n", m.Type, ev.Step)
		return nil
	})); err != nil {
		return err
	}

	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer bus.Close(context.WithoutCancel(ctx))
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- orc.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()

	printShop(s, "before:")
	order := shop.Order{ID: "order-1001", Customer: "alice", SKU: "book-42", Quantity: 2, Amount: 39_98}
	id, err := orc.Start(ctx, shop.SagaName, order)
	if err != nil {
		return err
	}
	fmt.Printf("started saga %s for %s\n", id, order.ID)
	in, err := shop.Wait(ctx, orc, id)
	if err != nil {
		return err
	}
	// Events travel on their own; let the last ones print first.
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("saga %s: %s", in.ID, in.State)
	if in.Reason != "" {
		fmt.Printf(" (%s)", in.Reason)
	}
	fmt.Println()
	for _, st := range in.Steps {
		fmt.Printf("  step %-18s %s\n", st.Name, st.State)
	}
	printShop(s, "after: ")
	return check(s, in.State, order, failPayment)
}

// check verifies the business outcome: a completed order moved stock into a
// reservation and held the money; a compensated one left everything as it was.
func check(s *shop.Shop, state saga.State, o shop.Order, failPayment bool) error {
	want, reserved, held := saga.Completed, o.Quantity, o.Amount
	if failPayment {
		want, reserved, held = saga.Compensated, 0, 0
	}
	stock, res := s.Stock(o.SKU)
	_, h := s.Balance(o.Customer)
	if state != want || res != reserved || stock+res != 10 || h != held {
		return fmt.Errorf("unexpected outcome: saga %s (want %s), reserved %d, stock %d, authorized %d", state, want, res, stock, h)
	}
	return nil
}
