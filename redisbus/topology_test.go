package redisbus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/redisbus"
)

// EVENTBUS_REDIS_TOPOLOGY_SUITE=1 also runs the bus suite on the Sentinel
// and Cluster deployments the tests start (a few minutes more).
const topologySuiteEnv = "EVENTBUS_REDIS_TOPOLOGY_SUITE"

// TestSentinel: a master and a Sentinel that monitors it, both processes of
// the test on ports of their own; the driver finds the master through the
// Sentinel (Config.MasterName) and a publish/consume round trip works.
func TestSentinel(t *testing.T) {
	serverPath := testenv.Program(t, "redis-server")
	dir := t.TempDir()
	master := startRedisProcess(t, "redis-server", serverPath, func(port int) []string {
		return []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	})
	conf := filepath.Join(dir, "sentinel.conf")
	sentinel := startRedisProcess(t, "redis-sentinel", serverPath, func(port int) []string {
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor primary %s 1\nsentinel down-after-milliseconds primary 5000\n",
			port, dir, strings.Replace(master.Addr(), ":", " ", 1))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{conf, "--sentinel"}
	})
	cfg := &redisbus.Config{Addrs: []string{sentinel.Addr()}, MasterName: "primary"}
	cfg.KeyPrefix = "sentinel-test"
	roundTrip(t, cfg)
	if os.Getenv(topologySuiteEnv) != "" {
		drivertest.RunBusTests(t, drivertest.Harness{
			Open: func(ctx context.Context) (driver.Driver, error) { return redisbus.Open(ctx, cfg) },
		})
	}
}

// TestCluster: a Redis Cluster of three masters, processes of the test on
// ports of their own, created with redis-cli --cluster create. A
// destination's keys share one slot (its name is a hash tag), and a
// publish/consume round trip works on events and on a stream (whose reader
// lease sits beside it).
func TestCluster(t *testing.T) {
	serverPath := testenv.Program(t, "redis-server")
	cliPath := testenv.Program(t, "redis-cli")
	var addrs []string
	for i := range 3 {
		dir := t.TempDir()
		p := startRedisProcess(t, fmt.Sprintf("redis-server cluster node %d", i), serverPath, func(port int) []string {
			return []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"}
		}, clusterPort)
		addrs = append(addrs, p.Addr())
	}
	ctx := ctxFor(t, 60*time.Second)
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cliPath, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		waitClusterOK(t, ctx, a)
	}

	cfg := &redisbus.Config{Addrs: addrs}
	cfg.KeyPrefix = "cluster-test"
	d := roundTrip(t, cfg)
	dest := driver.NewDestination(driver.Stream, "slots", "")
	key := d.StreamKey(dest)
	rdb := d.Client()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	lease := key + ":reader:g"
	s, err := rdb.ClusterKeySlot(ctx, lease).Result()
	if err != nil {
		t.Fatal(err)
	}
	if s != slot {
		t.Errorf("%s is in slot %d, %s in slot %d: want one slot", lease, s, key, slot)
	}
	if os.Getenv(topologySuiteEnv) != "" {
		drivertest.RunBusTests(t, drivertest.Harness{
			Open: func(ctx context.Context) (driver.Driver, error) { return redisbus.Open(ctx, cfg) },
		})
	}
}

// roundTrip publishes to an event destination and to a stream, each with a
// group, and checks that every message arrives once with its content.
func roundTrip(t *testing.T, cfg *redisbus.Config) *redisbus.Driver {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	sub, pub := openDriver(t, cfg), openDriver(t, cfg)
	for _, dest := range []driver.Destination{
		driver.NewDestination(driver.Event, "topology", "ping"),
		driver.NewDestination(driver.Stream, "topology", ""),
	} {
		s, err := sub.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		const n = 50
		msgs := make([]*driver.Message, n)
		for i := range msgs {
			msgs[i] = &driver.Message{ID: fmt.Sprintf("m%d", i), Source: "topology-test", Type: "ping", Key: fmt.Sprintf("k%d", i%3),
				Data: fmt.Appendf(nil, "payload %d", i)}
		}
		if err := pub.Publish(ctx, dest, msgs); err != nil {
			t.Fatalf("%s: publish: %v", dest.Name, err)
		}
		got := map[string]string{}
		for len(got) < n {
			ds, err := s.Receive(ctx, n)
			if err != nil {
				t.Fatalf("%s: after %d of %d: %v", dest.Name, len(got), n, err)
			}
			for _, d := range ds {
				if _, dup := got[d.Message.ID]; dup {
					t.Errorf("%s: %s received twice", dest.Name, d.Message.ID)
				}
				got[d.Message.ID] = string(d.Message.Data)
			}
			if err := s.Ack(ctx, ds); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if want := fmt.Sprintf("payload %d", i); got[fmt.Sprintf("m%d", i)] != want {
				t.Errorf("%s: m%d = %q, want %q", dest.Name, i, got[fmt.Sprintf("m%d", i)], want)
			}
		}
		if err := s.Close(ctx); err != nil {
			t.Errorf("%s: close: %v", dest.Name, err)
		}
	}
	return pub
}

// startRedisProcess runs a Redis program on a port of its own (from
// faults.FreePort, or pick when given) until the test ends.
func startRedisProcess(t *testing.T, name, path string, args func(port int) []string, pick ...func() (int, error)) *faults.Process {
	t.Helper()
	free := faults.FreePort
	if len(pick) > 0 {
		free = pick[0]
	}
	port, err := free()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := faults.StartProcess(ctx, name, fmt.Sprintf("127.0.0.1:%d", port), path, args(port)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// clusterPort returns a free port whose cluster bus port (port + 10000) is
// free too.
func clusterPort() (int, error) {
	for range 100 {
		port, err := faults.FreePort()
		if err != nil {
			return 0, err
		}
		if port+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port, nil
	}
	return 0, errors.New("no port with a free cluster bus port")
}

// waitClusterOK waits until the node at addr reports cluster_state:ok.
func waitClusterOK(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for {
		info, err := rdb.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("cluster node %s not ok: %v %q", addr, err, info)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
