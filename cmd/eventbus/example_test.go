package main

import (
	"context"
	"os"
	"strings"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// A query against a service that answers prints the reply's data.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "eventbus-example")
	defer os.RemoveAll(dir)
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: dir, Port: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown(ctx)

	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
	if err != nil {
		panic(err)
	}
	bus := eventbus.New(nil)
	_ = bus.Register("nats", d)
	_, _ = bus.HandleQuery(context.Background(), "inventory", "stock.get", eventbus.TypedQuery(func(_ context.Context, _ *eventbus.Message, sku string) (int, error) {
		return 42, nil
	}))
	if err := bus.Start(ctx); err != nil {
		panic(err)
	}
	defer bus.Close(ctx)

	run(ctx, []string{"query", "inventory", "stock.get", `"sku-1"`, "--url", srv.ClientURL()},
		os.Getenv, strings.NewReader(""), os.Stdout, os.Stderr)
	// Output: 42
}
