package eventbus_test

import (
	"context"
	"fmt"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
)

type OrderCreated struct {
	OrderID string  `json:"order_id"`
	Total   float64 `json:"total"`
}

func Example() {
	ctx := context.Background()
	bus := eventbus.New(&eventbus.Options{Source: "shop"})
	_ = bus.Register("memory", membus.New(nil))

	done := make(chan struct{})
	_, _ = bus.SubscribeEvents(context.Background(), []string{"order.created"}, "billing",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, o OrderCreated) error {
			fmt.Printf("billing saw %s for %.2f from %s\n", o.OrderID, o.Total, m.Source)
			close(done)
			return nil
		}))
	_, _ = bus.HandleQuery(context.Background(), "inventory", "stock.get",
		eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, sku string) (int, error) {
			return 42, nil
		}))
	if err := bus.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close(ctx)

	m, _ := bus.NewMessage("order.created", OrderCreated{OrderID: "o-1", Total: 99.5})
	if err := bus.PublishEvent(ctx, m); err != nil {
		fmt.Println(err)
	}
	<-done

	stock, err := eventbus.Ask[int](ctx, bus, "inventory", "stock.get", "sku-1")
	fmt.Println("stock:", stock, err)
	// Output:
	// billing saw o-1 for 99.50 from shop
	// stock: 42 <nil>
}

func ExampleBus_ProcessStream() {
	ctx := context.Background()
	bus := eventbus.New(nil)
	_ = bus.Register("memory", membus.New(nil))
	_, _ = bus.ProcessStream(context.Background(), "clicks", "analytics",
		eventbus.TypedBatch(func(ctx context.Context, ms []*eventbus.Message, pages []string) error {
			fmt.Println("batch:", pages)
			return nil
		}),
		&eventbus.BatchOptions{Size: 3, MaxWait: 50 * time.Millisecond})
	_ = bus.Start(ctx)

	var msgs []*eventbus.Message
	for _, page := range []string{"/", "/cart", "/pay", "/done"} {
		m, _ := bus.NewMessage("page.viewed", page)
		m.Key = "user-7" // one user's clicks stay in order
		msgs = append(msgs, m)
	}
	_ = bus.PublishStream(ctx, "clicks", msgs...)
	time.Sleep(200 * time.Millisecond)
	_ = bus.Close(ctx)
	// Output:
	// batch: [/ /cart /pay]
	// batch: [/done]
}

func ExampleBus_Query() {
	ctx := context.Background()
	bus := eventbus.New(nil)
	_ = bus.Register("memory", membus.New(nil))
	_, _ = bus.HandleQuery(context.Background(), "accounts", "balance.get", eventbus.QueryHandlerFunc(
		func(ctx context.Context, m *eventbus.Message) (*eventbus.Message, error) {
			return nil, eventbus.Errorf("not_found", "no account %s", m.Subject)
		}))
	_ = bus.Start(ctx)
	defer bus.Close(ctx)

	_, err := bus.Query(ctx, "accounts", &eventbus.Message{Type: "balance.get", Subject: "acc-9"})
	fmt.Println(err)
	_, err = bus.Query(ctx, "nobody", &eventbus.Message{Type: "balance.get"})
	fmt.Println(err)
	// Output:
	// eventbus: query accounts.balance.get failed remotely: not_found: no account acc-9
	// eventbus: query queries.nobody.balance.get via memory: membus: request to "queries.nobody.balance.get": no responders
}
