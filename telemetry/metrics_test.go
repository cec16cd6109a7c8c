package telemetry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/kafkabus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/redisbus"
	"github.com/marty-msf/eventbus/telemetry"
)

// A known workload: 10 events, of which 3 fail once and then succeed and 2
// fail permanently. The metrics, scraped from the Prometheus endpoint over
// HTTP, equal its counts and the bus's Stats.
func TestMetricsOfKnownWorkload(t *testing.T) {
	prom, err := telemetry.NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	mp, promHandler := prom.MeterProvider, prom.Handler
	defer mp.Shutdown(context.Background())
	obs, err := telemetry.New(&telemetry.Options{MeterProvider: mp, Histograms: prom.Histograms})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{
		Observer: obs,
		Retry:    eventbus.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
	})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	_, err = bus.SubscribeEvents(ctx, []string{"job"}, "workers", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		mu.Lock()
		seen[m.ID]++
		n := seen[m.ID]
		mu.Unlock()
		i, _ := strconv.Atoi(strings.TrimPrefix(m.ID, "job-"))
		switch {
		case i < 3 && n == 1:
			return errFlaky
		case i >= 8:
			return eventbus.Permanent(errFlaky)
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stop, err := obs.Watch(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i := range 10 {
		if err := bus.PublishEvent(ctx, &eventbus.Message{ID: "job-" + strconv.Itoa(i), Type: "job"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the workload", func() bool {
		s := bus.Stats()
		return s.Handled == 8 && s.DeadLettered == 2
	})
	if s := bus.Stats(); s.Failed != 5 || s.Dropped != 0 {
		t.Fatalf("stats %+v, want 5 failed, none dropped", s)
	}

	srv := httptest.NewServer(promHandler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, c := range []struct {
		metric string
		labels []string
		want   float64
	}{
		{"messaging_client_sent_messages_total", []string{`messaging_operation_name="send"`, `messaging_destination_name="events.job"`}, 10},
		{"messaging_client_consumed_messages_total", []string{`messaging_consumer_group_name="workers"`, `cloudevents_event_type="job"`}, 13},
		{"eventbus_messages_failed_total", nil, 5},
		{"eventbus_messages_retried_total", nil, 3},
		{"eventbus_messages_dead_lettered_total", []string{`eventbus_backend="main"`, `messaging_system="eventbus.memory"`}, 2},
		{"messaging_process_duration_seconds_count", []string{`error_type="permanent"`}, 2},
		{"messaging_process_duration_seconds_count", []string{`error_type="_OTHER"`}, 3},
		{"eventbus_messages_latency_seconds_count", nil, 13},
		{"eventbus_handlers_in_flight", nil, 0},
	} {
		if got := sample(t, text, c.metric, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
	if strings.Contains(text, "job-1") {
		t.Error("a message id is a label")
	}
}

// sample sums the samples of metric whose labels include all of labels.
func sample(t *testing.T, text, metric string, labels []string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + metric + `(\{[^}]*\})? (\S+)$`)
	found := false
	var sum float64
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(m[1], l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		found = true
		sum += v
	}
	if !found {
		t.Errorf("no sample of %s%v in:\n%s", metric, labels, grepLines(text, metric))
	}
	return sum
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, strings.SplitN(prefix, "_", 2)[0]) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// JetStream reports consumer lag: messages published while the handler is
// blocked wait on the server and show in eventbus.consumer.lag.
func TestConsumerLagNATS(t *testing.T) {
	_, d := startNATS(t)
	consumerLag(t, d)
}

// Redis Streams reports its group's lag (XINFO GROUPS).
func TestConsumerLagRedis(t *testing.T) {
	cfg, err := redisbus.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg.KeyPrefix = "telemetry-test-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := redisbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The bus closes d and its client: the keys are deleted with another.
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addrs[0], Username: cfg.Username, Password: cfg.Password, DB: cfg.DB})
	defer rdb.Close()
	defer func() {
		keys, err := rdb.Keys(context.Background(), cfg.KeyPrefix+":*").Result()
		if err == nil && len(keys) > 0 {
			err = rdb.Del(context.Background(), keys...).Err()
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}()
	consumerLag(t, d)
}

// Kafka reports its group's lag (committed offsets against end offsets).
func TestConsumerLagKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := kafkabus.Open(ctx, &kafkabus.Config{Brokers: cluster.ListenAddrs(), Options: kafkabus.Options{
		Partitions: 2, FetchMaxWait: 200 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		MinSessionTimeout: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 20 * time.Second,
	}})
	if err != nil {
		t.Fatal(err)
	}
	consumerLag(t, d)
}

// consumerLag checks that messages published to d while their handler is
// blocked show in eventbus.consumer.lag, scraped from the Prometheus
// endpoint over HTTP.
func consumerLag(t *testing.T, d driver.Driver) {
	prom, err := telemetry.NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	mp, promHandler := prom.MeterProvider, prom.Handler
	defer mp.Shutdown(context.Background())
	obs, err := telemetry.New(&telemetry.Options{MeterProvider: mp, Histograms: prom.Histograms})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, d, &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	_, err = bus.SubscribeEvents(ctx, []string{"slow"}, "lagging", eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}), eventbus.WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stop, err := obs.Watch(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for range 20 {
		if err := bus.PublishEvent(ctx, &eventbus.Message{Type: "slow"}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(promHandler)
	defer srv.Close()
	var lag float64
	waitFor(t, "a lag", func() bool {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		re := regexp.MustCompile(`(?m)^eventbus_consumer_lag\{[^}]*messaging_consumer_group_name="lagging"[^}]*\} (\S+)$`)
		if m := re.FindStringSubmatch(string(body)); m != nil {
			lag, _ = strconv.ParseFloat(m[1], 64)
		}
		return lag >= 15
	})
	close(release)
}

// Health reports per backend: not ready before Start, ready after, neither
// live nor ready after Close; the saga store check joins in.
func TestHealth(t *testing.T) {
	bus := newBus(t, membus.New(nil), nil)
	storeErr := error(nil)
	var storeMu sync.Mutex
	h := &telemetry.Health{Bus: bus, Checks: []telemetry.Check{{Name: "saga store", Ready: func(context.Context) error {
		storeMu.Lock()
		defer storeMu.Unlock()
		return storeErr
	}}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("readyz before Start: %d", got)
	}
	if got := status("/livez"); got != http.StatusOK {
		t.Errorf("livez before Start: %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := status("/readyz"); got != http.StatusOK {
		t.Errorf("readyz after Start: %d", got)
	}
	storeMu.Lock()
	storeErr = context.DeadlineExceeded
	storeMu.Unlock()
	rep := h.Check(ctx)
	if rep.Ready || !rep.Live || len(rep.Checks) != 2 || rep.Checks[1].Ready {
		t.Errorf("with the store down: %+v", rep)
	}
	storeMu.Lock()
	storeErr = nil
	storeMu.Unlock()
	closeBus(t, bus)
	if got := status("/livez"); got != http.StatusServiceUnavailable {
		t.Errorf("livez after Close: %d", got)
	}
}

// The NATS driver's Ping fails once the driver is closed.
func TestNATSPing(t *testing.T) {
	_, d := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Ping(ctx); err == nil {
		t.Fatal("ping after close succeeded")
	}
}

// The in-flight gauge counts the handlers running when it is read.
func TestInFlight(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	obs, err := telemetry.New(&telemetry.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, membus.New(nil), &eventbus.Options{Observer: obs})
	defer closeBus(t, bus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	running, release := make(chan struct{}), make(chan struct{})
	if _, err := bus.SubscribeEvents(ctx, []string{"slow"}, "g", eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		running <- struct{}{}
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishEvent(ctx, &eventbus.Message{Type: "slow"}); err != nil {
		t.Fatal(err)
	}
	<-running
	inFlight := func() int64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == telemetry.MetricInFlight {
					for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
						n += dp.Value
					}
				}
			}
		}
		return n
	}
	if n := inFlight(); n != 1 {
		t.Fatalf("%d handlers in flight, want 1", n)
	}
	close(release)
	waitFor(t, "the handler's end", func() bool { return bus.Stats().Handled == 1 })
	waitFor(t, "no handler in flight", func() bool { return inFlight() == 0 })
}
