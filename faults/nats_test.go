package faults_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/natsbus"
)

// startNATS runs the embedded NATS server as a process of the test, with
// JetStream's file store in a directory of the test.
func startNATS(t *testing.T) *faults.Process {
	path, store := program(t, "natsserver"), t.TempDir()
	return startBroker(t, "nats-server", path, func(port int) []string {
		return []string{"-port", fmt.Sprint(port), "-store", store}
	})
}

// natsConn connects to url with a heartbeat (PING) every hb and one
// unanswered PING allowed, so that a dead connection is given up within
// 2×hb; disconnected receives the time of every disconnect.
func natsConn(t *testing.T, url string, hb time.Duration, disconnected func(time.Time)) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.PingInterval(hb), nats.MaxPingsOutstanding(1),
		nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1), nats.Timeout(hb),
		// Errors of a cut connection are expected; the tally judges.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			if disconnected != nil {
				disconnected(time.Now())
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the bus that uses it: cleanups run last first
	return nc
}

func natsDriver(t *testing.T, nc *nats.Conn) driver.Driver {
	t.Helper()
	d, err := natsbus.New(ctxFor(t, 30*time.Second), nc, &natsbus.Options{AckWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNATSKilled: the nats-server process is killed with SIGKILL in the
// middle of the stream and started again on its port and store; every
// publish it confirmed is delivered.
func TestNATSKilled(t *testing.T) {
	srv := startNATS(t)
	url := "nats://" + srv.Addr()
	kills := scaled(1, 3)
	streamRun{
		total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
		open: func(t *testing.T) driver.Driver { return natsDriver(t, natsConn(t, url, time.Second, nil)) },
		fault: func(t *testing.T) {
			for i := range kills {
				if i > 0 {
					time.Sleep(time.Second) // let the stream flow between kills
				}
				restart(t, srv)
			}
		},
	}.run(t)
}

// TestNATSConnectionReset: every connection to the server is reset by the
// proxy in the middle of the stream; the clients reconnect and nothing
// confirmed is lost.
func TestNATSConnectionReset(t *testing.T) {
	srv := startNATS(t)
	proxy := startProxy(t, srv.Addr())
	url := "nats://" + proxy.Addr()
	streamRun{
		total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
		open: func(t *testing.T) driver.Driver { return natsDriver(t, natsConn(t, url, time.Second, nil)) },
		fault: func(t *testing.T) {
			for i := range scaled(1, 5) {
				if i > 0 {
					time.Sleep(500 * time.Millisecond)
				}
				t.Logf("reset %d connections", proxy.Reset())
			}
		},
	}.run(t)
}

// TestNATSBlackhole: the proxy keeps the connections open but lets nothing
// through. Each client must notice within twice its heartbeat (PING
// interval 1 s, one PING outstanding), reconnect once the way is open
// again, and lose nothing it had confirmed.
func TestNATSBlackhole(t *testing.T) {
	const hb = time.Second
	srv := startNATS(t)
	proxy := startProxy(t, srv.Addr())
	url := "nats://" + proxy.Addr()
	var (
		mu         sync.Mutex
		holedAt    time.Time
		detected   []time.Duration
		conns      int
		allNoticed = make(chan struct{})
	)
	noticed := func(at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if holedAt.IsZero() || len(detected) == conns {
			return
		}
		detected = append(detected, at.Sub(holedAt))
		if len(detected) == conns {
			close(allNoticed)
		}
	}
	streamRun{
		total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
		open: func(t *testing.T) driver.Driver {
			mu.Lock()
			conns++
			mu.Unlock()
			return natsDriver(t, natsConn(t, url, hb, noticed))
		},
		fault: func(t *testing.T) {
			mu.Lock()
			holedAt = time.Now()
			proxy.Blackhole()
			mu.Unlock()
			select {
			case <-allNoticed:
			case <-time.After(10 * hb):
			}
			proxy.Restore()
			mu.Lock()
			defer mu.Unlock()
			t.Logf("black hole noticed after %v (heartbeat %v)", detected, hb)
			if len(detected) < conns {
				t.Errorf("%d of %d connections noticed the black hole within %v", len(detected), conns, 10*hb)
			}
			for _, d := range detected {
				if d > 2*hb+schedulingSlack {
					t.Errorf("a black-holed connection was noticed after %v, more than twice the heartbeat %v (+%v slack)", d, hb, schedulingSlack)
				}
			}
		},
	}.run(t)
}

// schedulingSlack is what a loaded machine may add to a timer.
const schedulingSlack = 300 * time.Millisecond

func startProxy(t *testing.T, target string) *faults.Proxy {
	t.Helper()
	p, err := faults.StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}
