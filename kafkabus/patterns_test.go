package kafkabus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/kafkabus"
)

// TestPatterns runs every messaging pattern of the Bus over Kafka, each bus
// on its own connection.
func TestPatterns(t *testing.T) {
	drivertest.RunBusTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return kafkabus.Open(ctx, testConfig()) },
	})
}
