package redisbus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/redisbus"
)

// TestPatterns runs every messaging pattern of the Bus over Redis, each bus
// on its own connection.
func TestPatterns(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunBusTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return redisbus.Open(ctx, cfg) },
	})
}
