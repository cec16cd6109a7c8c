package rabbitbus_test

import (
	"testing"

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
