package faults_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/internal/rabbitnode"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// lostConnection is a slog handler that reports when the driver logs that
// its connection is lost: the moment it noticed.
type lostConnection struct{ noticed func(time.Time) }

func (h lostConnection) Enabled(context.Context, slog.Level) bool { return true }

func (h lostConnection) Handle(_ context.Context, r slog.Record) error {
	if h.noticed != nil && strings.Contains(r.Message, "connection lost") {
		h.noticed(time.Now())
	}
	return nil
}

func (h lostConnection) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lostConnection) WithGroup(string) slog.Handler      { return h }

// rabbitDriver opens a driver on url with heartbeat hb; noticed, when set,
// receives the time at which it finds its connection lost.
func rabbitDriver(t *testing.T, url, prefix string, hb time.Duration, noticed func(time.Time)) driver.Driver {
	t.Helper()
	d, err := rabbitbus.Open(ctxFor(t, time.Minute), &rabbitbus.Config{
		URL: url, Heartbeat: hb, Logger: slog.New(lostConnection{noticed: noticed}),
		Options: rabbitbus.Options{Prefix: prefix},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRabbitMQ runs the RabbitMQ rows of the fault suite on one node of the
// test's own (its own ports and data directory, never the shared broker),
// started once for the three of them: the node killed with SIGKILL and
// started again, every connection reset by a proxy, and a black-holed
// connection that each client must notice within twice the heartbeat.
// Every publish is a persistent message on a durable classic queue,
// confirmed by the broker.
func TestRabbitMQ(t *testing.T) {
	began := time.Now()
	n := rabbitnode.Start(t)
	t.Logf("node started in %v", time.Since(began).Round(time.Millisecond))

	t.Run("Killed", func(t *testing.T) {
		prefix := "faults-" + unique()
		kills := scaled(1, 3)
		streamRun{
			total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: 2 * time.Minute,
			open: func(t *testing.T) driver.Driver { return rabbitDriver(t, n.URL(), prefix, 0, nil) },
			fault: func(t *testing.T) {
				for i := range kills {
					if i > 0 {
						time.Sleep(time.Second) // let the stream flow between kills
					}
					n.Kill()
					took := n.Start()
					t.Logf("killed the node with SIGKILL; it accepted connections again after %v", took.Round(time.Millisecond))
				}
			},
		}.run(t)
	})

	t.Run("ConnectionReset", func(t *testing.T) {
		proxy := startProxy(t, n.Addr())
		url := "amqp://guest:guest@" + proxy.Addr() + "/"
		prefix := "faults-" + unique()
		streamRun{
			total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
			open: func(t *testing.T) driver.Driver { return rabbitDriver(t, url, prefix, 0, nil) },
			fault: func(t *testing.T) {
				for i := range scaled(1, 5) {
					if i > 0 {
						time.Sleep(500 * time.Millisecond)
					}
					t.Logf("reset %d connections", proxy.Reset())
				}
			},
		}.run(t)
	})

	t.Run("Blackhole", func(t *testing.T) {
		// AMQP heartbeats are whole seconds; amqp091 gives up a connection
		// from which nothing was read for 1.5 heartbeats.
		const hb = time.Second
		proxy := startProxy(t, n.Addr())
		url := "amqp://guest:guest@" + proxy.Addr() + "/"
		prefix := "faults-" + unique()
		var (
			mu       sync.Mutex
			holedAt  time.Time
			detected = map[string]time.Duration{}
			clients  []string
		)
		noticed := func(who string) func(time.Time) {
			return func(at time.Time) {
				mu.Lock()
				defer mu.Unlock()
				if _, ok := detected[who]; !ok && !holedAt.IsZero() {
					detected[who] = at.Sub(holedAt)
				}
			}
		}
		streamRun{
			total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
			open: func(t *testing.T) driver.Driver {
				mu.Lock()
				who := []string{"consumer", "publisher"}[len(clients)]
				clients = append(clients, who)
				mu.Unlock()
				return rabbitDriver(t, url, prefix, hb, noticed(who))
			},
			fault: func(t *testing.T) {
				mu.Lock()
				holedAt = time.Now()
				proxy.Blackhole()
				mu.Unlock()
				deadline := time.Now().Add(30 * hb)
				for {
					mu.Lock()
					n := len(detected)
					mu.Unlock()
					if n == len(clients) || time.Now().After(deadline) {
						break
					}
					time.Sleep(10 * time.Millisecond) // polling what the loggers record
				}
				proxy.Restore()
				mu.Lock()
				defer mu.Unlock()
				t.Logf("black hole noticed after %v (heartbeat %v)", detected, hb)
				for _, who := range clients {
					d, ok := detected[who]
					switch {
					case !ok:
						t.Errorf("the %s never noticed the black hole (within %v)", who, 30*hb)
					case d > 2*hb+schedulingSlack:
						t.Errorf("the %s noticed the black hole after %v, more than twice the heartbeat %v (+%v slack)", who, d, hb, schedulingSlack)
					}
				}
			},
		}.run(t)
	})
}

// TestHandlerFaultsRabbitMQ: poison messages, panicking and slow handlers,
// and a graceful shutdown under load, on the shared broker (AMQP_URL) under
// a prefix of the test's own, whose queues expire a minute after their last
// use.
func TestHandlerFaultsRabbitMQ(t *testing.T) {
	url := testenv.AMQPURL(t)
	prefix := "faults-" + unique()
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return rabbitbus.Open(ctx, &rabbitbus.Config{URL: url, Options: rabbitbus.Options{
				Prefix: prefix, QueueExpiry: time.Minute, GroupExpiry: time.Minute,
			}})
		},
	})
}
