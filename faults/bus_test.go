package faults_test

import (
	"context"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
)

// TestHandlerFaultsMembus: poison messages, panicking and slow handlers,
// and a graceful shutdown under load, on the in-memory driver.
func TestHandlerFaultsMembus(t *testing.T) {
	base := membus.New(nil)
	t.Cleanup(func() { _ = base.Close(context.Background()) })
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(context.Context) (driver.Driver, error) { return base.Connect(), nil },
	})
}

// TestHandlerFaultsNATS: the same on JetStream, on an embedded server.
func TestHandlerFaultsNATS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
		},
	})
}
