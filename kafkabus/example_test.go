package kafkabus_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/kafkabus"
)

// Example publishes an event and receives it in a consumer group, on an
// in-process kfake broker.
func Example() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	d, err := kafkabus.Open(ctx, &kafkabus.Config{
		Brokers: broker.ListenAddrs(),
		Options: kafkabus.Options{Partitions: 3, FetchMaxWait: 200 * time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	defer d.Close(context.Background())

	dest := driver.NewDestination(driver.Event, "order", "created")
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "billing", Durable: true})
	if err != nil {
		panic(err)
	}
	defer sub.Close(context.Background())

	err = d.Publish(ctx, dest, []*driver.Message{{
		ID: "o-1", Source: "/shop", Type: "order.created", Key: "customer-7",
		DataContentType: "application/json", Data: []byte(`{"total":42}`),
	}})
	if err != nil {
		panic(err)
	}
	ds, err := sub.Receive(ctx, 10)
	if err != nil {
		panic(err)
	}
	m := ds[0].Message
	fmt.Println(d.Topic(dest), d.GroupID(dest, "billing"))
	fmt.Println(m.ID, m.Type, m.Key, string(m.Data), ds[0].Attempt)
	if err := sub.Ack(ctx, ds); err != nil {
		panic(err)
	}
	// Output:
	// events.order.created billing.events.order.created
	// o-1 order.created customer-7 {"total":42} 1
}
