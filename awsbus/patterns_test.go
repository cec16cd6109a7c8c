package awsbus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
)

// TestPatterns runs every messaging pattern of the Bus over SNS and SQS,
// each bus on its own driver.
func TestPatterns(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunBusTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return awsbus.Open(ctx, cfg) },
	})
}
