package faults_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/redisbus"
)

// startRedis runs redis-server as a process of the test: its own port and
// directory, and an append-only file synced on every write, so that what
// it acknowledged survives SIGKILL. (With the default appendfsync everysec
// a killed server may lose up to a second of acknowledged writes.)
func startRedis(t *testing.T) *faults.Process {
	path, dir := testenv.Program(t, "redis-server"), t.TempDir()
	return startBroker(t, "redis-server", path, func(port int) []string {
		return []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"}
	})
}

// errorHook reports when each command fails on a connection, as go-redis
// sees it: the moment a black hole is noticed.
type errorHook struct{ failed func(time.Time) }

func (h errorHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h errorHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && err != redis.Nil && h.failed != nil {
			h.failed(time.Now())
		}
		return err
	}
}

func (h errorHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && err != redis.Nil && h.failed != nil {
			h.failed(time.Now())
		}
		return err
	}
}

// redisDriver opens a driver on a client of its own whose commands time out
// after hb (Redis has no heartbeat of its own: a command's read timeout is
// how a client learns that the server is gone).
func redisDriver(t *testing.T, addr, prefix string, hb time.Duration, failed func(time.Time)) driver.Driver {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true, ContextTimeoutEnabled: true,
		DialTimeout: hb, ReadTimeout: hb, WriteTimeout: hb, MaxRetries: -1,
	})
	rdb.AddHook(errorHook{failed: failed})
	t.Cleanup(func() { _ = rdb.Close() })
	d, err := redisbus.New(ctxFor(t, 30*time.Second), rdb, &redisbus.Options{
		KeyPrefix: prefix, AckWait: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRedisKilled: redis-server is killed with SIGKILL in the middle of the
// stream and started again on its port and directory; every publish it
// confirmed is delivered.
func TestRedisKilled(t *testing.T) {
	srv := startRedis(t)
	prefix := "faults-" + unique()
	open := func(t *testing.T) driver.Driver {
		t.Helper()
		d, err := redisbus.Open(ctxFor(t, 30*time.Second), &redisbus.Config{
			Addrs:   []string{srv.Addr()},
			Options: redisbus.Options{KeyPrefix: prefix, AckWait: 2 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	kills := scaled(1, 3)
	streamRun{
		total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
		open: open,
		fault: func(t *testing.T) {
			for i := range kills {
				if i > 0 {
					time.Sleep(time.Second)
				}
				restart(t, srv)
			}
		},
	}.run(t)
}

// TestRedisConnectionReset: every connection is reset by the proxy in the
// middle of the stream; nothing confirmed is lost.
func TestRedisConnectionReset(t *testing.T) {
	srv := startRedis(t)
	proxy := startProxy(t, srv.Addr())
	prefix := "faults-" + unique()
	streamRun{
		total: scaled(3_000, 20_000), faultAfter: scaled(1_000, 4_000), deliveryBound: time.Minute,
		open: func(t *testing.T) driver.Driver { return redisDriver(t, proxy.Addr(), prefix, time.Second, nil) },
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

// TestRedisBlackhole: the proxy lets nothing through. The publisher's and
// the consumer's clients must each notice within twice the heartbeat (the
// client's read timeout, 1 s), and nothing confirmed is lost once the way
// is open again.
func TestRedisBlackhole(t *testing.T) {
	const hb = time.Second
	srv := startRedis(t)
	proxy := startProxy(t, srv.Addr())
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
			return redisDriver(t, proxy.Addr(), prefix, hb, noticed(who))
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
				time.Sleep(10 * time.Millisecond)
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
}

// TestHandlerFaultsRedis: poison messages, panicking and slow handlers, and
// a graceful shutdown under load, on a redis-server of the test's own
// (without persistence: no broker fails here).
func TestHandlerFaultsRedis(t *testing.T) {
	path, dir := testenv.Program(t, "redis-server"), t.TempDir()
	srv := startBroker(t, "redis-server", path, func(port int) []string {
		return []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "no", "--save", "", "--daemonize", "no"}
	})
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return redisbus.Open(ctx, &redisbus.Config{Addrs: []string{srv.Addr()}})
		},
	})
}
