package natsbus_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// An embedded server with JetStream storage in a directory: publish an event
// and receive it in a durable group.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "natsbus-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	d, err := natsbus.OpenEmbedded(ctx, &natsbus.EmbeddedOptions{DataDir: dir}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close(ctx) // shuts the embedded server down too

	dest := driver.NewDestination(driver.Event, "order", "created")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "billing", Durable: true})
	if err != nil {
		log.Fatal(err)
	}
	err = d.Publish(ctx, dest, []*driver.Message{{
		ID: "o-1", Source: "/shop", Type: "order.created", Key: "order-42",
		DataContentType: "application/json", Data: []byte(`{"order":42}`),
	}})
	if err != nil {
		log.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, dl := range ds {
		fmt.Println(dl.Message.Type, dl.Message.Key, string(dl.Message.Data), "attempt", dl.Attempt)
	}
	if err := sub.Ack(ctx, ds); err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored in", d.StreamName(driver.Event))
	// Output:
	// order.created order-42 {"order":42} attempt 1
	// stored in EVENTBUS_EVENTS
}

// Queries use NATS request/reply: the responder answers on the request's
// inbox, and a query nobody serves fails at once with ErrNoResponders.
func ExampleDriver_Request() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	// Other processes would connect to srv.ClientURL() the same way.
	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close(ctx)

	dest := driver.NewDestination(driver.Query, "users", "get")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "users"})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			return
		}
		reply := &driver.Message{ID: "r-1", Source: "/users", Type: "users.user", Data: []byte("Ada, for " + string(ds[0].Message.Data))}
		if err := d.Reply(ctx, ds[0], reply); err != nil {
			log.Print(err)
		}
	}()

	resp, err := d.Request(ctx, dest, &driver.Message{ID: "q-1", Source: "/web", Type: "users.get", Data: []byte("user 7")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(resp.Data))
	<-done

	_, err = d.Request(ctx, driver.NewDestination(driver.Query, "nobody", "home"), &driver.Message{ID: "q-2", Source: "/web", Type: "nobody.home"})
	fmt.Println(err)
	// Output:
	// Ada, for user 7
	// natsbus: request to "queries.nobody.home": no responders
}
