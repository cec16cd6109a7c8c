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
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
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

// Order is the saga's data.
type Order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Amount   int    `json:"amount"` // cents
}

// orderSaga is the definition: three steps, each with its compensation.
func orderSaga() saga.Definition {
	return saga.Definition{
		Name:    "order",
		Timeout: time.Minute,
		Steps: []saga.Step{
			{Name: "reserve-inventory", Service: "inventory", Command: "inventory.reserve", Compensation: "inventory.release",
				Timeout: 5 * time.Second, Retry: saga.Retry{Attempts: 3, Backoff: 200 * time.Millisecond}},
			{Name: "authorize-payment", Service: "payment", Command: "payment.authorize", Compensation: "payment.void",
				Timeout: 5 * time.Second, Retry: saga.Retry{Attempts: 3, Backoff: 200 * time.Millisecond}},
			{Name: "arrange-shipping", Service: "shipping", Command: "shipping.arrange", Compensation: "shipping.cancel",
				Timeout: 5 * time.Second,
				// Shipping needs the reservation's warehouse: an earlier reply.
				Input: func(in saga.Input) (any, error) {
					var o Order
					var r Reservation
					if err := in.Decode(&o); err != nil {
						return nil, err
					}
					if err := in.Reply("reserve-inventory", &r); err != nil {
						return nil, err
					}
					return Shipment{Order: o.ID, Warehouse: r.Warehouse, Quantity: o.Quantity}, nil
				}},
		},
	}
}

// Reservation is the inventory service's reply.
type Reservation struct {
	ID        string `json:"id"`
	Warehouse string `json:"warehouse"`
}

// Shipment is the shipping step's payload.
type Shipment struct {
	Order     string `json:"order"`
	Warehouse string `json:"warehouse"`
	Quantity  int    `json:"quantity"`
}

// shop holds the services' state; each service would own its own database.
type shop struct {
	mu       sync.Mutex
	stock    map[string]int
	reserved map[string]int
	balance  map[string]int
	held     map[string]int
}

func (s *shop) print(prefix string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Printf("%s stock %d, reserved %d; customer balance %d, authorized %d\n",
		prefix, s.stock["book-42"], s.reserved["book-42"], s.balance["alice"], s.held["alice"])
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
	if err := orc.Register(orderSaga()); err != nil {
		return err
	}
	s := &shop{
		stock: map[string]int{"book-42": 10}, reserved: map[string]int{},
		balance: map[string]int{"alice": 50_00}, held: map[string]int{},
	}
	if err := participants(bus, store, s, failPayment); err != nil {
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

	s.print("before:")
	order := Order{ID: "order-1001", Customer: "alice", SKU: "book-42", Quantity: 2, Amount: 39_98}
	id, err := orc.Start(ctx, "order", order)
	if err != nil {
		return err
	}
	fmt.Printf("started saga %s for %s\n", id, order.ID)
	in, err := wait(ctx, orc, id)
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
	s.print("after: ")
	return s.check(in.State, order, failPayment)
}

// check verifies the business outcome: a completed order moved stock into a
// reservation and held the money; a compensated one left everything as it was.
func (s *shop) check(state saga.State, o Order, failPayment bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want, reserved, held := saga.Completed, o.Quantity, o.Amount
	if failPayment {
		want, reserved, held = saga.Compensated, 0, 0
	}
	if state != want || s.reserved[o.SKU] != reserved || s.stock[o.SKU]+s.reserved[o.SKU] != 10 || s.held[o.Customer] != held {
		return fmt.Errorf("unexpected outcome: saga %s (want %s), reserved %d, stock %d, authorized %d",
			state, want, s.reserved[o.SKU], s.stock[o.SKU], s.held[o.Customer])
	}
	return nil
}

func wait(ctx context.Context, orc *saga.Orchestrator, id string) (*saga.Instance, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		in, err := orc.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !in.State.Active() {
			return in, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// participants registers the inventory, payment and shipping services.
func participants(bus *eventbus.Bus, store saga.Store, s *shop, failPayment bool) error {
	inventory, err := saga.NewParticipant(bus, "inventory", store, nil)
	if err != nil {
		return err
	}
	payment, err := saga.NewParticipant(bus, "payment", store, nil)
	if err != nil {
		return err
	}
	shipping, err := saga.NewParticipant(bus, "shipping", store, nil)
	if err != nil {
		return err
	}
	order := func(req *saga.Request) (Order, error) {
		var o Order
		if err := req.Decode(&o); err != nil {
			return o, saga.Fail(err)
		}
		return o, nil
	}
	return errors.Join(
		inventory.Handle("inventory.reserve", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.stock[o.SKU] < o.Quantity {
				return nil, saga.Fail(fmt.Errorf("only %d of %s in stock", s.stock[o.SKU], o.SKU))
			}
			s.stock[o.SKU] -= o.Quantity
			s.reserved[o.SKU] += o.Quantity
			fmt.Printf("  inventory reserved %d x %s\n", o.Quantity, o.SKU)
			return Reservation{ID: "res-" + o.ID, Warehouse: "north"}, nil
		}),
		inventory.Handle("inventory.release", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			var r Reservation
			_ = req.DecodeReply(&r)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.stock[o.SKU] += o.Quantity
			s.reserved[o.SKU] -= o.Quantity
			fmt.Printf("  inventory released reservation %s (%d x %s)\n", r.ID, o.Quantity, o.SKU)
			return nil, nil
		}),
		payment.Handle("payment.authorize", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			if failPayment {
				fmt.Printf("  payment   declined %d.%02d for %s\n", o.Amount/100, o.Amount%100, o.Customer)
				return nil, saga.Fail(errors.New("card declined"))
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.balance[o.Customer] -= o.Amount
			s.held[o.Customer] += o.Amount
			fmt.Printf("  payment   authorized %d.%02d for %s\n", o.Amount/100, o.Amount%100, o.Customer)
			return map[string]string{"authorization": "auth-" + o.ID}, nil
		}),
		payment.Handle("payment.void", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.balance[o.Customer] += o.Amount
			s.held[o.Customer] -= o.Amount
			fmt.Printf("  payment   voided authorization for %s\n", o.Customer)
			return nil, nil
		}),
		shipping.Handle("shipping.arrange", func(ctx context.Context, req *saga.Request) (any, error) {
			var sh Shipment
			if err := req.Decode(&sh); err != nil {
				return nil, saga.Fail(err)
			}
			fmt.Printf("  shipping  arranged %d items of %s from warehouse %s\n", sh.Quantity, sh.Order, sh.Warehouse)
			return map[string]string{"tracking": "TRK-" + sh.Order}, nil
		}),
		shipping.Handle("shipping.cancel", func(ctx context.Context, req *saga.Request) (any, error) {
			fmt.Println("  shipping  cancelled")
			return nil, nil
		}),
	)
}
