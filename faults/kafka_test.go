package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
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

// kafkaOptions are driver options for a broker of the tests: groups
// rebalance in a fraction of a second.
func kafkaOptions() kafkabus.Options {
	return kafkabus.Options{
		Partitions:        4,
		FetchMaxWait:      200 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		MinSessionTimeout: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  20 * time.Second,
	}
}

// inProcessKafka starts kfake in the test process, closed when the test
// ends.
func inProcessKafka(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(4),
		kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestHandlerFaultsKafka: poison messages, panicking and slow handlers, and
// a graceful shutdown under load, on kfake.
func TestHandlerFaultsKafka(t *testing.T) {
	c := inProcessKafka(t)
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) {
			return kafkabus.Open(ctx, &kafkabus.Config{Brokers: c.ListenAddrs(), Options: kafkaOptions()})
		},
	})
}

// memberEnv carries, to the member process, the broker, destination and
// group it consumes: "brokers|destination|group".
const memberEnv = "EVENTBUS_FAULTS_KAFKA_MEMBER"

// memberBatch is how many deliveries a member takes, handles and acks at a
// time: the in-flight batch.
const memberBatch = 50

// TestKafkaMemberProcess is the group member that TestKafkaMemberKilled
// runs as a second process: it receives batches of memberBatch, prints
// "handled <id>" for each message once handled, and acks each batch after
// its last message, until it is killed.
func TestKafkaMemberProcess(t *testing.T) {
	spec := os.Getenv(memberEnv)
	if spec == "" {
		t.Skip("the member process of TestKafkaMemberKilled (run by it)")
	}
	parts := strings.Split(spec, "|")
	ctx := context.Background()
	d, err := kafkabus.Open(ctx, &kafkabus.Config{Brokers: strings.Split(parts[0], ","), Options: kafkaOptions()})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := d.Subscribe(ctx, driver.NewDestination(driver.Stream, parts[1]), driver.SubscribeOptions{Group: parts[2], AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("joined")
	for {
		ds, err := sub.Receive(ctx, memberBatch)
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range ds {
			time.Sleep(2 * time.Millisecond) // the work of a handler
			fmt.Println("handled", dl.Message.ID)
		}
		if err := sub.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKafkaMemberKilled: two members of a group, one in a second process,
// share a stream; the second process is killed with SIGKILL in the middle
// of a batch. After the rebalance (its session times out), the member left
// handles the dead one's partitions from their committed offsets: every
// message is handled, none lost, and the duplicates (handled by both) are
// at most the batch the dead member had in flight.
func TestKafkaMemberKilled(t *testing.T) {
	c := inProcessKafka(t)
	ctx := ctxFor(t, 3*time.Minute)
	cfg := &kafkabus.Config{Brokers: c.ListenAddrs(), Options: kafkaOptions()}
	d, err := kafkabus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	name, group := "faults.member."+unique(), "workers"
	dst := driver.NewDestination(driver.Stream, name)
	if err := d.DeclareGroup(ctx, dst, driver.SubscribeOptions{Group: group, StartAt: driver.StartFirst}); err != nil {
		t.Fatal(err)
	}
	total := scaled(2_000, 20_000)
	msgs := make([]*driver.Message, 0, 100)
	for i := range total {
		msgs = append(msgs, &driver.Message{ID: fmt.Sprintf("m-%06d", i), Source: "/faults", Type: "t", Key: fmt.Sprint(i % 16), Data: []byte("x")})
		if len(msgs) == cap(msgs) || i == total-1 {
			if err := d.Publish(ctx, dst, msgs); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}

	// The second process joins first and takes every partition; ours
	// joins once it is busy, and takes some.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.CommandContext(ctx, exe, "-test.run=^TestKafkaMemberProcess$", "-test.count=1")
	child.Env = append(os.Environ(), memberEnv+"="+strings.Join(c.ListenAddrs(), ",")+"|"+name+"|"+group)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu         sync.Mutex
		byChild    = map[string]int{}
		childLines = make(chan struct{}, 1)
		childDone  = make(chan struct{})
	)
	go func() {
		defer close(childDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "handled "); ok {
				mu.Lock()
				byChild[id]++
				mu.Unlock()
				select {
				case childLines <- struct{}{}:
				default:
				}
			}
		}
	}()
	childCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(byChild)
	}
	waitFor := func(what string, bound time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(bound)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, bound)
			}
			select {
			case <-childLines:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("the member process handles messages", 60*time.Second, func() bool { return childCount() >= memberBatch })

	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: group, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var (
		ours    = map[string]int{}
		ourMu   sync.Mutex
		stop    = make(chan struct{})
		running sync.WaitGroup
	)
	running.Go(func() {
		for {
			ds, err := sub.Receive(ctx, memberBatch)
			if err != nil {
				select {
				case <-stop:
				default:
					t.Errorf("Receive: %v", err)
				}
				return
			}
			ourMu.Lock()
			for _, dl := range ds {
				ours[dl.Message.ID]++
			}
			ourMu.Unlock()
			if err := sub.Ack(ctx, ds); err != nil {
				t.Errorf("Ack: %v", err)
				return
			}
		}
	})
	defer func() {
		close(stop)
		_ = sub.Close(context.Background())
		running.Wait()
	}()

	// Kill the member process in the middle of a batch.
	before := childCount()
	waitFor("the member process goes on", 60*time.Second, func() bool { return childCount() > before+memberBatch })
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-childDone
	_ = child.Wait()
	killedAt := time.Now()
	// handled counts the messages handled at least once, and the
	// handlings beyond the first.
	handled := func() (all, dup int) {
		mu.Lock()
		defer mu.Unlock()
		ourMu.Lock()
		defer ourMu.Unlock()
		for id, n := range byChild {
			all, dup = all+1, dup+n+ours[id]-1
		}
		for id, n := range ours {
			if byChild[id] == 0 {
				all, dup = all+1, dup+n-1
			}
		}
		return all, dup
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if all, _ := handled(); all >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	all, dup := handled()
	ourMu.Lock()
	nOurs := len(ours)
	ourMu.Unlock()
	t.Logf("published %d; handled %d (member process %d before SIGKILL, this process %d), lost %d, duplicates %d (in-flight batch %d); all handled %s after the kill",
		total, all, childCount(), nOurs, total-all, dup, memberBatch, time.Since(killedAt).Round(time.Millisecond))
	if all != total {
		t.Errorf("%d of %d messages never handled", total-all, total)
	}
	if dup > memberBatch {
		t.Errorf("%d duplicate handlings, more than the in-flight batch of %d", dup, memberBatch)
	}
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
			Options: kafkaOptions(),
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
