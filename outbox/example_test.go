package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/outbox"
)

// An order and its event commit together; the relay publishes the event
// after the commit; the consumer's inbox processes it once however often it
// is delivered.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, _ := outbox.OpenSQLite(filepath.Join(dir, "shop.db"))
	defer db.Close()
	_, _ = db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY); CREATE TABLE invoices (order_id TEXT PRIMARY KEY)`)
	ob, _ := outbox.New(ctx, db, outbox.SQLite, nil)
	inbox, _ := outbox.NewInbox(ctx, db, outbox.SQLite, &outbox.InboxOptions{Consumer: "billing"})

	bus := eventbus.New(&eventbus.Options{Source: "shop"})
	_ = bus.Register("memory", membus.New(nil))
	billing := inbox.Handler(func(ctx context.Context, tx *sql.Tx, m *eventbus.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO invoices (order_id) VALUES ($1)`, string(m.Data))
		fmt.Println("invoiced", string(m.Data))
		return err
	})
	delivered := make(chan struct{})
	_, _ = bus.SubscribeEvents(ctx, []string{"order.placed"}, "billing",
		eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
			defer close(delivered)
			return billing.Handle(ctx, m)
		}))
	_ = bus.Start(ctx)
	defer bus.Close(ctx)

	tx, _ := db.BeginTx(ctx, nil)
	_, _ = tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES ('o-1')`)
	ev := &eventbus.Message{Source: "shop", Type: "order.placed", Key: "o-1", Data: []byte("o-1")}
	_ = ob.PublishEvent(ctx, tx, ev)
	_ = tx.Commit()

	relay := ob.Relay(bus, nil)
	n, err := relay.RunOnce(ctx)
	<-delivered
	fmt.Println("relayed", n, err)
	// The same message again (as after a relay crash) is not processed twice.
	_ = billing.Handle(ctx, ev)

	var invoices int
	_ = db.QueryRow(`SELECT COUNT(*) FROM invoices`).Scan(&invoices)
	fmt.Println("invoices:", invoices)
	// Output:
	// invoiced o-1
	// relayed 1 <nil>
	// invoices: 1
}
