package rabbitbus_test

import (
	"testing"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// TestPatterns runs every messaging pattern of the Bus on RabbitMQ, each bus
// on its own connection.
func TestPatterns(t *testing.T) {
	b := newBroker(t)
	drivertest.RunBusTests(t, drivertest.Harness{Open: b.harnessOpen(b.config)})
}
