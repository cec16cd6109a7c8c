package natsbus_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/natsbus"
)

func TestConformance(t *testing.T) {
	srv := startServer(t, nil)
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
		},
		Crash:        crash,
		Deduplicates: true,
	})
}

// TestConformanceJetStreamOff runs the suite on core NATS only: the suite
// checks the reduced capabilities the driver claims.
func TestConformanceJetStreamOff(t *testing.T) {
	srv := startServer(t, nil)
	off := false
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return natsbus.Open(ctx, &natsbus.Config{
				Servers: []string{srv.ClientURL()},
				Options: natsbus.Options{JetStream: &off},
			})
		},
	})
}

// TestConformanceExternal runs the suite against the server at NATS_URL
// (Debian's nats-server 2.9.10 on our machines), with its own stream names so
// that it never meets the streams of other programs on that server.
func TestConformanceExternal(t *testing.T) {
	url := testenv.NATSURL(t)
	// The server is shared: this run's subjects and streams are its own.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg := &natsbus.Config{
		Servers: []string{url},
		Options: natsbus.Options{StreamPrefix: "NATSBUS_CT_" + run, SubjectPrefix: "natsbus-ct-" + run},
	}
	// The suite's durable groups live in these streams: remove them all.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := natsbus.Open(ctx, cfg)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer d.Close(ctx)
		for _, p := range []driver.Pattern{driver.Event, driver.Command, driver.Stream, driver.DeadLetter} {
			if err := d.JetStream().DeleteStream(ctx, d.StreamName(p)); err != nil {
				t.Errorf("cleanup: delete stream %s: %v", d.StreamName(p), err)
			}
		}
	})
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open:         func(ctx context.Context) (driver.Driver, error) { return natsbus.Open(ctx, cfg) },
		Crash:        crash,
		Deduplicates: true,
		Limitations: map[string]string{
			"Settlement/CloseGivesBack": "nats-server 2.9 may deliver a message given back at close to the closed " +
				"subscription's last pull request, still waiting on the server; it returns only after AckWait (see the package doc)",
		},
	})
	t.Run("DeadLetters", func(t *testing.T) {
		drivertest.RunDeadLetterTests(t, drivertest.Harness{Open: func(ctx context.Context) (driver.Driver, error) { return natsbus.Open(ctx, cfg) }})
	})
}

// crash cuts the driver's connection underneath it, as a dead process's
// would be: no nak, no in-progress ack is sent any more.
func crash(d driver.Driver) error {
	d.(*natsbus.Driver).Conn().Close()
	return nil
}
