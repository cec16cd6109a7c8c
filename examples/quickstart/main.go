// Command quickstart shows every messaging pattern of eventbus on one bus:
// events with consumer groups, commands, queries with replies and typed
// errors, a keyed stream processed in batches, and a broadcast.
//
// The bus runs on the embedded default, chosen in one visible line: an
// embedded: URL, which natsbus registers, opens a NATS server with JetStream
// file storage inside this process. Nothing to install.
//
//	go run ./examples/quickstart [-data dir]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount_cents"`
}

type Charge struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount_cents"`
}

func main() {
	data := flag.String("data", "", "data directory of the embedded NATS server (default: a temporary one)")
	flag.Parse()
	dir := *data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "eventbus-quickstart-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if err := run(context.Background(), dir); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dataDir string) error {
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(dataDir), &eventbus.Options{Source: "quickstart"})
	if err != nil {
		return err
	}
	defer func() {
		if err := bus.Close(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()

	// Every handler reports what it handled; main waits for all of it.
	handled := make(chan string, 64)
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }

	// Pub/sub: two groups each get every event.
	for _, group := range []string{"billing", "analytics"} {
		_, err := bus.SubscribeEvents(ctx, []string{"order.placed"}, group,
			eventbus.Typed(func(ctx context.Context, m *eventbus.Message, o OrderPlaced) error {
				say("[event → %s] order %s placed, %d cents", group, o.OrderID, o.Amount)
				handled <- "event"
				return nil
			}))
		if err != nil {
			return err
		}
	}
	// Point-to-point: one instance of "payments" handles each command.
	_, err = bus.HandleCommand(ctx, "payments", "charge",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, c Charge) error {
			say("[command → payments] charging %d cents for %s (correlation %s)", c.Amount, c.OrderID, m.CorrelationID)
			handled <- "command"
			return nil
		}))
	if err != nil {
		return err
	}
	// Request/response with a typed error.
	_, err = bus.HandleQuery(ctx, "inventory", "stock.get",
		eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, sku string) (int, error) {
			if sku == "unknown" {
				return 0, eventbus.Errorf("not_found", "no such sku %q", sku)
			}
			return 7, nil
		}))
	if err != nil {
		return err
	}
	// Streams: batches of up to 3, ordered per key.
	_, err = bus.ProcessStream(ctx, "page-views", "analytics",
		eventbus.TypedBatch(func(ctx context.Context, ms []*eventbus.Message, pages []string) error {
			say("[stream batch] %d views of user %s: %v", len(pages), ms[0].Key, pages)
			for range pages {
				handled <- "view"
			}
			return nil
		}),
		&eventbus.BatchOptions{Size: 3, MaxWait: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	// Broadcast: every instance.
	_, err = bus.SubscribeBroadcast(ctx, []string{"config.reloaded"}, eventbus.HandlerFunc(
		func(ctx context.Context, m *eventbus.Message) error {
			say("[broadcast] config reloaded: %s", m.Data)
			handled <- "broadcast"
			return nil
		}))
	if err != nil {
		return err
	}

	if err := bus.Start(ctx); err != nil {
		return err
	}

	order := OrderPlaced{OrderID: "o-1001", Amount: 4999}
	m, err := bus.NewMessage("order.placed", order)
	if err != nil {
		return err
	}
	if err := bus.PublishEvent(ctx, m); err != nil {
		return err
	}
	cmd, _ := bus.NewMessage("charge", Charge(order))
	cmd.CorrelationID = m.ID
	if err := bus.SendCommand(ctx, "payments", cmd); err != nil {
		return err
	}
	stock, err := eventbus.Ask[int](ctx, bus, "inventory", "stock.get", "sku-42")
	if err != nil {
		return err
	}
	say("[query] stock of sku-42: %d", stock)
	_, err = eventbus.Ask[int](ctx, bus, "inventory", "stock.get", "unknown")
	var remote *eventbus.RemoteError
	if errors.As(err, &remote) {
		say("[query] typed remote error: code=%s message=%q", remote.Code, remote.Message)
	}
	var views []*eventbus.Message
	for _, page := range []string{"/", "/shoes", "/cart", "/checkout"} {
		v, _ := bus.NewMessage("page.viewed", page)
		v.Key = "user-7"
		views = append(views, v)
	}
	if err := bus.PublishStream(ctx, "page-views", views...); err != nil {
		return err
	}
	b, _ := bus.NewMessage("config.reloaded", "v2")
	if err := bus.Broadcast(ctx, b); err != nil {
		return err
	}

	want := map[string]int{"event": 2, "command": 1, "view": 4, "broadcast": 1}
	timeout := time.After(10 * time.Second)
	for n := 8; n > 0; n-- {
		select {
		case kind := <-handled:
			want[kind]--
		case <-timeout:
			return fmt.Errorf("timed out; still missing %v", want)
		}
	}
	for kind, missing := range want {
		if missing != 0 {
			return fmt.Errorf("%s: %d more or fewer than expected", kind, missing)
		}
	}
	say("all patterns delivered on %s", bus.Backends()[0])
	return nil
}
