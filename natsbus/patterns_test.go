package natsbus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/natsbus"
)

// TestPatterns runs every messaging pattern of the Bus over JetStream on an
// embedded server, each bus on its own connection.
func TestPatterns(t *testing.T) {
	srv := startServer(t, nil)
	drivertest.RunBusTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
		},
	})
}

// TestPatternsJetStreamOff runs the patterns core NATS can serve: streams and
// dead-lettering need JetStream and are skipped by the suite.
func TestPatternsJetStreamOff(t *testing.T) {
	srv := startServer(t, nil)
	off := false
	drivertest.RunBusTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}, Options: natsbus.Options{JetStream: &off}})
		},
	})
}
