package faults_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/kafkabus"
)

// startKafka runs kfake, franz-go's Kafka, as a process of the test with
// its log, offsets and groups in a data directory of the test: a restart
// reloads them, as a Kafka broker restarted on its log directory does.
// kfake writes each produced batch to its segment files before it
// acknowledges it (the OS page cache holds it; SIGKILL, unlike a power
// cut, loses nothing of it).
func startKafka(t *testing.T) *faults.Process {
	path, dir := program(t, "kafkaserver"), t.TempDir()
	return startBroker(t, "kfake", path, func(port int) []string {
		return []string{"-port", fmt.Sprint(port), "-data", dir}
	})
}

// TestKafkaKilled: the kfake process is killed with SIGKILL in the middle
// of the stream and started again on its port and data directory; every
// publish it confirmed is delivered to the consumer group, which resumes
// from its committed offsets.
func TestKafkaKilled(t *testing.T) {
	srv := startKafka(t)
	open := func(t *testing.T) driver.Driver {
		t.Helper()
		d, err := kafkabus.Open(ctxFor(t, 30*time.Second), &kafkabus.Config{
			Brokers: []string{srv.Addr()},
			Options: kafkabus.Options{
				Partitions:        4,
				FetchMaxWait:      200 * time.Millisecond,
				HeartbeatInterval: 100 * time.Millisecond,
				MinSessionTimeout: time.Second,
				SessionTimeout:    10 * time.Second,
				RebalanceTimeout:  20 * time.Second,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	kills := scaled(1, 3)
	streamRun{
		total: scaled(2_000, 20_000), faultAfter: scaled(700, 4_000), deliveryBound: 90 * time.Second,
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
