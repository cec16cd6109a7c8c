package main

import (
	"context"
	"fmt"
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
func BenchmarkScenarios(b *testing.B) {
	for _, s := range scenarios {
		b.Run(s.ID(), func(b *testing.B) {
			cfg := DefaultConfig()
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
			// Core NATS may drop for a slow consumer, but not 2000 messages.
			if res.Handled != cfg.Messages {
				t.Fatalf("Handled = %d, want %d (%s)", res.Handled, cfg.Messages, res.Note)
			}
			// Backlog rows measure no publishing.
			if res.Publish < 0 || res.Consume <= 0 || res.Consume < res.Publish/2 || res.Allocs == 0 {
				t.Fatalf("implausible timings or allocations: %+v", res)
			}
		})
	}
}

func TestReport(t *testing.T) {
	rep := &report{cfg: DefaultConfig(), started: time.Now()}
	add := func(name string, role Role, pub, cons time.Duration, allocs uint64) {
		rep.add(Scenario{Name: name, Broker: memBroker, Role: role},
			Result{Messages: 1000, Handled: 1000, Publish: pub, Consume: cons, Allocs: allocs, CPU: time.Millisecond}, nil)
	}
	add("raw", RoleRaw, time.Millisecond, time.Millisecond, 5000)
	add("bus", RoleBus, 2*time.Millisecond, 4*time.Millisecond, 7000)
	add("peer", RolePeer, 8*time.Millisecond, 8*time.Millisecond, 30000)
	rep.add(Scenario{Name: "broken", Broker: memBroker, Role: RoleReference}, Result{}, fmt.Errorf("boom"))
	md := rep.markdown()
	for _, want := range []string{
		"| in-memory | raw | 1.00M | 1.00M |  | 8.00 / 8.00 | 5.0 | 1.00 |",
		"| in-memory | bus | 500k | 250k | 0.50 / 0.25 | 4.00 / 2.00 | 7.0 | 1.00 |",
		"| in-memory | broken | failed |",
		"| in-memory | eventbus publish ≥ 2× Watermill | 4.00× | yes |",
		"| in-memory | eventbus consume ≥ 2× Watermill | 2.00× | yes |",
		"| in-memory | allocs/msg added by the bus (eventbus − raw driver) ≤ 3 | 2.0 | yes |",
		"- in-memory / broken failed: boom",
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
