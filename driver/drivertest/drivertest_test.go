package drivertest_test

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memHarness opens connections to one in-memory broker.
func memHarness(t *testing.T) drivertest.Harness {
	broker := membus.New(nil)
	t.Cleanup(func() { _ = broker.Close(context.Background()) })
	return drivertest.Harness{
		Open:  func(context.Context) (driver.Driver, error) { return broker.Connect(), nil },
		Crash: func(d driver.Driver) error { d.(*membus.Driver).Crash(); return nil },
	}
}

// A driver's conformance test is a harness and one call. Each Open is
// another connection to the same broker.
func Example() {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	h := drivertest.Harness{
		Open: func(context.Context) (driver.Driver, error) { return broker.Connect(), nil },
	}
	// In a test: drivertest.RunConformanceTests(t, h)

	// What the suite does with it: one connection subscribes, another
	// publishes, as two service instances would.
	ctx := context.Background()
	consumer, _ := h.Open(ctx)
	defer consumer.Close(ctx)
	producer, _ := h.Open(ctx)
	defer producer.Close(ctx)

	dst := driver.NewDestination(driver.Event, "order", "created")
	sub, err := consumer.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "billing"})
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := &driver.Message{ID: "1", Source: "/shop", Type: "order.created", Data: []byte(`{"order":42}`)}
	if err := producer.Publish(ctx, dst, []*driver.Message{msg}); err != nil {
		fmt.Println(err)
		return
	}
	ds, err := sub.Receive(ctx, 10)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s attempt %d\n", ds[0].Message.Type, ds[0].Message.Data, ds[0].Attempt)
	_ = sub.Ack(ctx, ds)
	// Output: order.created {"order":42} attempt 1
}

// TestPassesOnMembus is the control of TestSuiteDetectsFaults: the suite
// passes on the in-memory driver that the faulty drivers break.
func TestPassesOnMembus(t *testing.T) {
	drivertest.RunConformanceTests(t, memHarness(t))
}
