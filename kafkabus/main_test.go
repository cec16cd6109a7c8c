package kafkabus_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/kafkabus"
)

// cluster is the package's one in-process Kafka broker.
var cluster *kfake.Cluster

// TestMain starts the one broker of the package, runs the tests, and checks
// that no goroutine outlives them.
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
		// sarama (under the CloudEvents SDK's binding) starts go-metrics'
		// meter goroutine once per process and never ends it.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick")); err != nil {
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

// unique returns a random suffix for topic and group names.
func unique() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36)
}
