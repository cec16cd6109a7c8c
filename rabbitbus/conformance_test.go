package rabbitbus_test

import (
	"context"
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// TestConformance runs the driver suite on classic queues.
func TestConformance(t *testing.T) {
	b := newBroker(t)
	drivertest.RunConformanceTests(t, drivertest.Harness{Open: b.harnessOpen(b.config), Crash: b.crash})
}

// TestConformanceQuorum runs it with durable groups on quorum queues.
func TestConformanceQuorum(t *testing.T) {
	b := newBroker(t)
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: b.harnessOpen(func() *rabbitbus.Config {
			c := b.config()
			c.QueueType = rabbitbus.Quorum
			return c
		}),
		Crash: b.crash,
	})
}

// TestDeadLetterConformance runs the dead-letter store suite on classic and
// on quorum keeper queues.
func TestDeadLetterConformance(t *testing.T) {
	for _, qt := range []rabbitbus.QueueType{rabbitbus.Classic, rabbitbus.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			b := newBroker(t)
			drivertest.RunDeadLetterTests(t, drivertest.Harness{
				Open: b.harnessOpen(func() *rabbitbus.Config {
					c := b.config()
					c.QueueType = qt
					if qt == rabbitbus.Quorum {
						c.DeliveryLimit = 3 // kept off keeper queues: reading counts as a delivery
					}
					return c
				}),
				Crash:            b.crash,
				InjectDeadLetter: injectDeadLetter,
			})
		})
	}
}

// injectDeadLetter stores body on dl's queue as a raw AMQP message without
// any CloudEvents property, through the default exchange.
func injectDeadLetter(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error {
	rd := d.(*rabbitbus.Driver)
	if err := rd.DeclareGroup(ctx, dl, driver.SubscribeOptions{}); err != nil {
		return err
	}
	q, err := rd.QueueName(dl, "")
	if err != nil {
		return err
	}
	ch, err := rd.Conn().Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return err
	}
	c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
	if err != nil {
		return err
	}
	if ok, err := c.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("not confirmed: %v", err)
	}
	return nil
}
