package kafkabus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/kafkabus"
)

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return kafkabus.Open(ctx, testConfig()) },
	})
}
