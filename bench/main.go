// Command bench measures eventbus against the raw client of each broker and
// against Watermill, on the same broker in the same run, and writes the
// results as a Markdown table.
//
//	cd bench && go run . [-only regexp] [-duration 3s] [-out RESULTS.md]
//
// Every scenario runs the same workload: Size-byte messages (256), Publishers
// concurrent publishing goroutines (16), and the consumer running at the same
// time. The publish rate is the number of messages over the time until the
// last publish was confirmed; the consume rate is the same number over the
// time until the last message was handled. Allocations (runtime.MemStats
// Mallocs) and CPU time (getrusage) are the whole process's over the traffic,
// embedded brokers included, divided by the number of messages. Latency
// scenarios run one client doing request/reply back to back and report p50
// and p99.
//
// Performance is reported, never asserted: the targets section says which
// ratios meet the project's goals, and the exit status is non-zero only when
// a scenario failed to run. Scenarios are registered per broker (membus.go,
// nats.go, ...) with register; bench_test.go exposes the same scenarios as
// testing.B benchmarks for profiling.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"time"
)

func main() {
	cfg := DefaultConfig()
	only := flag.String("only", "", "run only scenarios whose broker/name matches this regexp")
	out := flag.String("out", "", "also write the Markdown report to this file")
	repeat := flag.Int("repeat", 1, "run every scenario this many times, in rounds, and report each one's median run")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long each scenario publishes")
	flag.IntVar(&cfg.Publishers, "publishers", cfg.Publishers, "concurrent publishers")
	flag.IntVar(&cfg.Size, "size", cfg.Size, "payload size in bytes")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, *only, *out, *repeat, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, only, out string, repeat int, stdout, progress io.Writer) error {
	re, err := regexp.Compile(only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	var selected []Scenario
	for _, s := range scenarios {
		if re.MatchString(s.ID()) {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		return fmt.Errorf("no scenario matches %q", only)
	}
	rep := &report{cfg: cfg, started: time.Now(), repeat: max(repeat, 1)}
	// Rounds rather than back-to-back repeats, so that a change in the
	// machine's load touches every row alike.
	runs := make([][]Result, len(selected))
	errs := make([]error, len(selected))
	for round := range rep.repeat {
		for i, s := range selected {
			if errs[i] != nil {
				continue
			}
			fmt.Fprintf(progress, "%-45s ", s.ID())
			if rep.repeat > 1 {
				fmt.Fprintf(progress, "[%d/%d] ", round+1, rep.repeat)
			}
			t0 := time.Now()
			res, err := s.Run(ctx, cfg)
			if err != nil {
				errs[i] = err
				fmt.Fprintf(progress, "FAILED after %v: %v\n", time.Since(t0).Round(time.Millisecond), err)
			} else {
				runs[i] = append(runs[i], res)
				fmt.Fprintf(progress, "%s (%v)\n", res.summary(), time.Since(t0).Round(time.Millisecond))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	failed := 0
	for i, s := range selected {
		if errs[i] != nil {
			failed++
		}
		rep.add(s, median(runs[i]), errs[i])
	}
	rep.elapsed = time.Since(rep.started)
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d scenarios failed", failed)
	}
	return nil
}

// median returns the run with the median consume rate (for latency runs:
// the median p99), or a zero Result when there is none.
func median(rs []Result) Result {
	if len(rs) == 0 {
		return Result{}
	}
	key := func(r Result) float64 {
		if r.Latencies != nil {
			return float64(r.Percentile(99))
		}
		return r.ConsumeRate()
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Result) int { return cmp.Compare(key(a), key(b)) })
	return s[(len(s)-1)/2]
}

func (r Result) summary() string {
	if r.Latencies != nil {
		return fmt.Sprintf("%d round trips, p50 %s, p99 %s", r.Messages, micros(r.Percentile(50)), micros(r.Percentile(99)))
	}
	if r.Publish == 0 {
		return fmt.Sprintf("%d msgs, consume %s/s", r.Messages, si(r.ConsumeRate()))
	}
	return fmt.Sprintf("%d msgs, publish %s/s, consume %s/s", r.Messages, si(r.PublishRate()), si(r.ConsumeRate()))
}
