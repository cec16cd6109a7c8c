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

// A two-step saga whose second step is declined: the first is compensated.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "saga-example")
	defer os.RemoveAll(dir)
	store, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "saga.db"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

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
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = orc.Run(runCtx) }()
	defer func() { stop(); <-done }()

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
