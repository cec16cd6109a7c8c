package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// BenchmarkScenarios runs every registered scenario as a sub-benchmark with
// b.N messages (or round trips), timing only the traffic:
//
//	go test -run '^$' -bench 'Scenarios/JetStream/eventbus' -cpuprofile cpu.out -memprofile mem.out
//
// BENCH_SIZE sets the payload size in bytes (default 256).
func BenchmarkScenarios(b *testing.B) {
	size := DefaultConfig().Size
	if v := os.Getenv("BENCH_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_SIZE=%q: want a positive number of bytes", v)
		}
		size = n
	}
	for _, s := range scenarios {
		b.Run(s.ID(), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Size = size
			cfg.Messages = int64(b.N)
			cfg.OnStart = b.ResetTimer
			cfg.OnStop = b.StopTimer
			b.ReportAllocs()
			res, err := s.Run(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			if res.Latencies != nil {
				b.ReportMetric(float64(res.Percentile(50))/float64(time.Microsecond), "p50-µs")
				b.ReportMetric(float64(res.Percentile(99))/float64(time.Microsecond), "p99-µs")
				b.ReportMetric(float64(res.Percentile(99.9))/float64(time.Microsecond), "p999-µs")
				return
			}
			b.ReportMetric(res.PublishRate(), "pub-msg/s")
			b.ReportMetric(res.ConsumeRate(), "cons-msg/s")
		})
	}
}

// TestScenarios runs every scenario with a small count and checks that each
// delivered every confirmed message, with its payload, and tore down cleanly
// (TestMain checks for leaked goroutines).
func TestScenarios(t *testing.T) {
	for _, s := range scenarios {
		t.Run(s.ID(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Messages = 2000
			cfg.Drain = 20 * time.Second
			res, err := s.Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Messages != cfg.Messages {
				t.Fatalf("Messages = %d, want %d", res.Messages, cfg.Messages)
			}
			if res.Latencies != nil {
				if len(res.Latencies) != int(cfg.Messages) || res.Percentile(99) <= 0 {
					t.Fatalf("%d latencies, p99 %v; want %d positive", len(res.Latencies), res.Percentile(99), cfg.Messages)
				}
				return
			}
			// Core NATS may drop for a slow consumer, but not 2000 messages;
			// a selective row handles what its filter selects.
			want := cfg.Messages
			if res.Selected > 0 {
				want = res.Selected
			}
			if res.Handled != want {
				t.Fatalf("Handled = %d, want %d (%s)", res.Handled, want, res.Note)
			}
			// Backlog rows measure no publishing.
			if res.Publish < 0 || res.Consume <= 0 || res.Consume < res.Publish/2 || res.Allocs == 0 {
				t.Fatalf("implausible timings or allocations: %+v", res)
			}
		})
	}
}

func TestReport(t *testing.T) {
	rep := &report{cfg: DefaultConfig(), sizes: []int{256, 65536}, started: time.Now()}
	add := func(name string, size int, role Role, pub, cons time.Duration, allocs uint64, cpu time.Duration) {
		rep.add(Scenario{Name: name, Broker: memBroker, Role: role}, size,
			Result{Messages: 1000, Handled: 1000, Publish: pub, Consume: cons, Allocs: allocs, CPU: cpu}, nil)
	}
	add("raw", 256, RoleRaw, time.Millisecond, time.Millisecond, 5000, time.Millisecond)
	add("bus", 256, RoleBus, 2*time.Millisecond, 4*time.Millisecond, 6000, 1500*time.Microsecond)
	add("peer", 256, RolePeer, 8*time.Millisecond, 8*time.Millisecond, 30000, time.Millisecond)
	add("raw", 65536, RoleRaw, 2*time.Millisecond, 2*time.Millisecond, 5000, time.Millisecond)
	add("bus", 65536, RoleBus, 2*time.Millisecond, 2*time.Millisecond, 9000, time.Millisecond)
	rep.add(Scenario{Name: "broken", Broker: memBroker, Role: RoleReference}, 256, Result{}, fmt.Errorf("boom"))
	lat := func(name, broker string, role Role, us ...time.Duration) {
		var ds []time.Duration
		for _, u := range us {
			ds = append(ds, u*time.Microsecond)
		}
		rep.add(Scenario{Name: name, Broker: broker, Role: role}, 256,
			Result{Messages: int64(len(ds)), Handled: int64(len(ds)), Publish: time.Second, Consume: time.Second, Latencies: ds, CPU: time.Duration(len(ds)) * time.Microsecond}, nil)
	}
	lat("raw", rrBroker, RoleRaw, 10, 10, 20)
	lat("bus", rrBroker, RoleBus, 11, 11, 40)
	md := rep.markdown()
	for _, want := range []string{
		"Payloads of 256 B, 64 KiB,",
		"| in-memory | raw | 256 B | 1.00M | 1.00M |  | 8.00 / 8.00 | 5.0 | 1.00 |  |",
		"| in-memory | bus | 256 B | 500k | 250k | 0.50 / 0.25 | 4.00 / 2.00 | 6.0 | 1.50 | +0.50 |",
		"| in-memory | bus | 64 KiB | 500k | 500k | 1.00 / 1.00 |  | 9.0 | 1.00 | +0.00 |",
		"| in-memory | broken | 256 B | failed |",
		"| in-memory | 256 B | eventbus publish ≥ 2× Watermill | 4.00× | yes |",
		"| in-memory | 256 B | eventbus consume ≥ 2× Watermill | 2.00× | yes |",
		"| in-memory | 256 B | allocs/msg added by the bus (eventbus − raw driver) ≤ 1 | 1.0 | yes |",
		"| in-memory | 64 KiB | allocs/msg added by the bus (eventbus − raw driver) ≤ 1 | 4.0 | **no** |",
		"| NATS request/reply | bus | 256 B | 3.00 | 11 | 40 | 40 | 1.10 / 2.00 / 2.00 | 0.0 | 1.00 | +0.00 |",
		"| NATS request/reply | 256 B | eventbus p50 ≤ 1.1× raw | 1.10× | yes |",
		"| NATS request/reply | 256 B | eventbus p999 ≤ 1.5× raw | 2.00× | **no** |",
		"- in-memory / broken (256 B) failed: boom",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.5, 1}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if ds[0] != 100 {
		t.Error("percentile sorted its input in place")
	}
	if got := percentile(ds, 99.9); got != 100 {
		t.Errorf("percentile(99.9) = %v, want 100", got)
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func ExampleResult() {
	r := Result{Messages: 300_000, Handled: 300_000, Publish: 2 * time.Second, Consume: 3 * time.Second,
		Allocs: 1_500_000, CPU: 600 * time.Millisecond}
	fmt.Println(si(r.PublishRate()), si(r.ConsumeRate()), r.AllocsPerMsg(), r.CPUPerMsg())
	// Output: 150k 100k 5 2
}
