package awsbus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
)

// TestConformance runs the driver suite against the emulator on standard
// (non-FIFO) topics and queues; streams are FIFO whatever the configuration,
// so the ordering test runs on them.
//
// Harness.Deduplicates is false: SQS FIFO drops a repeated de-duplication id
// without telling the sender, so driver.ErrDuplicate is never observable, and
// standard queues do not de-duplicate at all (the suite publishes its
// duplicates as events).
func TestConformance(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return awsbus.Open(ctx, cfg) },
	})
}
