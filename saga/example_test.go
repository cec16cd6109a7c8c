package saga_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

// exampleStore opens a SQLite store in a temporary directory; closeStore
// closes it and removes the directory.
func exampleStore(ctx context.Context) (store *sqlstore.Store, closeStore func(), err error) {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		return nil, nil, err
	}
	store, err = sqlstore.OpenSQLite(ctx, filepath.Join(dir, "saga.db"), nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return store, func() { store.Close(); os.RemoveAll(dir) }, nil
}

// runInBackground runs orc until the returned function is called, which
// returns once Run has.
func runInBackground(ctx context.Context, orc *saga.Orchestrator) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = orc.Run(ctx) }()
	return func() { cancel(); <-done }
}

// A two-step saga whose second step is declined: the first is compensated.
func Example() {
	ctx := context.Background()
	store, closeStore, err := exampleStore(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeStore()

	bus := eventbus.New(nil)
	_ = bus.Register("mem", membus.New(nil))
	orc, _ := saga.NewOrchestrator(bus, store, &saga.Options{PollInterval: 10 * time.Millisecond})
	err = orc.Register(saga.Definition{Name: "transfer", Steps: []saga.Step{
		{Name: "debit", Service: "bank", Command: "bank.debit", Compensation: "bank.credit", Timeout: time.Second},
		{Name: "deposit", Service: "broker", Command: "broker.deposit", Timeout: time.Second},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}

	bank, _ := saga.NewParticipant(bus, "bank", store, nil)
	_ = bank.Handle("bank.debit", func(ctx context.Context, req *saga.Request) (any, error) {
		var t struct{ Amount int }
		_ = req.Decode(&t)
		fmt.Println("bank: debit", t.Amount)
		return map[string]string{"tx": "t-1"}, nil
	})
	_ = bank.Handle("bank.credit", func(ctx context.Context, req *saga.Request) (any, error) {
		var debit struct{ Tx string }
		_ = req.DecodeReply(&debit)
		fmt.Println("bank: reverse", debit.Tx)
		return nil, nil
	})
	broker, _ := saga.NewParticipant(bus, "broker", store, nil)
	_ = broker.Handle("broker.deposit", func(ctx context.Context, req *saga.Request) (any, error) {
		return nil, saga.Fail(errors.New("account closed"))
	})

	if err := bus.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close(ctx)
	defer runInBackground(ctx, orc)()

	id, _ := orc.Start(ctx, "transfer", map[string]int{"Amount": 100})
	for {
		in, _ := orc.Get(ctx, id)
		if !in.State.Active() {
			fmt.Println("saga:", in.State, "-", in.Reason)
			for _, st := range in.Steps {
				fmt.Println(" ", st.Name, st.State)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// bank: debit 100
	// bank: reverse t-1
	// saga: compensated - step deposit failed: account closed
	//   debit compensated
	//   deposit failed
}

// A program that has no saga definition — an operator's tool — cancels a
// saga through the store; the orchestrator that runs it applies the request.
func ExampleRequestCancel() {
	ctx := context.Background()
	store, closeStore, err := exampleStore(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeStore()

	// The service that runs the saga: a room is held, then the booking
	// waits for an approval event.
	bus := eventbus.New(nil)
	_ = bus.Register("mem", membus.New(nil))
	orc, _ := saga.NewOrchestrator(bus, store, &saga.Options{Instance: "booking-1", PollInterval: 10 * time.Millisecond})
	_ = orc.Register(saga.Definition{Name: "booking", Steps: []saga.Step{
		{Name: "hold", Service: "rooms", Command: "rooms.hold", Compensation: "rooms.release", Timeout: time.Second},
		{Name: "approval", Event: "booking.approved", Timeout: time.Hour},
	}})
	rooms, _ := saga.NewParticipant(bus, "rooms", store, nil)
	for _, cmd := range []string{"rooms.hold", "rooms.release"} {
		_ = rooms.Handle(cmd, func(ctx context.Context, req *saga.Request) (any, error) {
			fmt.Println("rooms:", cmd)
			return nil, nil
		})
	}
	if err := bus.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close(ctx)
	defer runInBackground(ctx, orc)()
	id, _ := orc.Start(ctx, "booking", map[string]string{"room": "12"})
	for in, _ := orc.Get(ctx, id); in.Steps[0].State != saga.StepCompleted; in, _ = orc.Get(ctx, id) {
		time.Sleep(10 * time.Millisecond)
	}

	// The tool needs the store only.
	r, err := saga.RequestCancel(ctx, store, id, &saga.RequestOptions{By: "ops"})
	if err != nil {
		fmt.Println(err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := saga.WaitRequest(wctx, store, id, r.ID); err != nil {
		fmt.Println(err)
		return
	}
	for in, _ := orc.Get(ctx, id); ; in, _ = orc.Get(ctx, id) {
		if !in.State.Active() {
			fmt.Println("saga:", in.State, "-", in.Reason)
			for _, ev := range in.History {
				if ev.Request == r.ID {
					fmt.Println(" ", ev.Kind, "by", ev.By)
				}
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// rooms: rooms.hold
	// rooms: rooms.release
	// saga: compensated - cancelled
	//   cancel.requested by ops
	//   cancel.applied by booking-1
}
