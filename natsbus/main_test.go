package natsbus_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/natsbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer starts an embedded server on a random port with its storage in
// a temporary directory, shut down when the test ends.
func startServer(t testing.TB, opts *natsbus.EmbeddedOptions) *natsbus.Server {
	t.Helper()
	o := natsbus.EmbeddedOptions{Port: -1}
	if opts != nil {
		o = *opts
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsbus.StartServer(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// openDriver opens a driver on cfg, closed when the test ends.
func openDriver(t testing.TB, cfg *natsbus.Config) *natsbus.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := natsbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serverConfig connects to srv over TCP.
func serverConfig(srv *natsbus.Server) *natsbus.Config {
	return &natsbus.Config{Servers: []string{srv.ClientURL()}}
}
