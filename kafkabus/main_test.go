package kafkabus_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/kafkabus"
)

// cluster is the package's one in-process Kafka broker.
var cluster *kfake.Cluster

func TestMain(m *testing.M) {
	var err error
	cluster, err = kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.DefaultNumPartitions(4),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
	code := m.Run()
	cluster.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testConfig is a configuration for the test broker, tuned so that groups
// rebalance in a fraction of a second.
func testConfig() *kafkabus.Config {
	return &kafkabus.Config{
		Brokers: cluster.ListenAddrs(),
		Options: kafkabus.Options{
			Partitions:        4,
			FetchMaxWait:      200 * time.Millisecond,
			HeartbeatInterval: 100 * time.Millisecond,
			MinSessionTimeout: time.Second,
			SessionTimeout:    10 * time.Second,
			RebalanceTimeout:  20 * time.Second,
		},
	}
}

// openDriver opens a driver on cfg, closed when the test ends.
func openDriver(t testing.TB, cfg *kafkabus.Config) *kafkabus.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := kafkabus.Open(ctx, cfg)
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
