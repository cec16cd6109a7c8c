// Command bench measures eventbus against the raw client of each broker and
// against Watermill, on the same broker in the same run, and writes the
// results as a Markdown table.
//
//	cd bench && go run . [-only regexp] [-duration 3s] [-sizes 16,256,65536] [-out RESULTS.md]
//
// Every scenario runs the same workload: Size-byte messages (256, or each of
// -sizes in turn), Publishers
// concurrent publishing goroutines (16), and the consumer running at the same
// time. The publish rate is the number of messages over the time until the
// last publish was confirmed; the consume rate is the same number over the
// time until the last message was handled. Allocations (runtime.MemStats
// Mallocs) and CPU time (getrusage) are the whole process's over the traffic,
// embedded brokers included, divided by the number of messages. Latency
// scenarios run one client (or 16) doing request/reply back to back and
// report p50, p99 and p999.
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
	"strconv"
	"strings"
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
	sizeList := flag.String("sizes", "", "comma-separated payload sizes in bytes (replaces -size): every scenario runs at each")
	flag.Parse()
	sizes, err := parseSizes(*sizeList, cfg.Size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: -sizes:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, sizes, *only, *out, *repeat, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// parseSizes reads -sizes; an empty list means the one size def.
func parseSizes(list string, def int) ([]int, error) {
	if list == "" {
		return []int{def}, nil
	}
	var sizes []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number of bytes", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

func run(ctx context.Context, cfg Config, sizes []int, only, out string, repeat int, stdout, progress io.Writer) error {
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
	rep := &report{cfg: cfg, sizes: sizes, started: time.Now(), repeat: max(repeat, 1)}
	// Rounds rather than back-to-back repeats, so that a change in the
	// machine's load touches every row alike; sizes within a round, so
	// that each size's rows share the round's load.
	type job struct {
		s    Scenario
		size int
		runs []Result
		err  error
	}
	var jobs []*job
	for _, size := range sizes {
		for _, s := range selected {
			jobs = append(jobs, &job{s: s, size: size})
		}
	}
	for round := range rep.repeat {
		for _, j := range jobs {
			if j.err != nil {
				continue
			}
			c := cfg
			c.Size = j.size
			label := j.s.ID()
			if len(sizes) > 1 {
				label += fmt.Sprintf(" [%s]", sizeLabel(j.size))
			}
			fmt.Fprintf(progress, "%-45s ", label)
			if rep.repeat > 1 {
				fmt.Fprintf(progress, "[%d/%d] ", round+1, rep.repeat)
			}
			t0 := time.Now()
			res, err := j.s.Run(ctx, c)
			if err != nil {
				j.err = err
				fmt.Fprintf(progress, "FAILED after %v: %v\n", time.Since(t0).Round(time.Millisecond), err)
			} else {
				j.runs = append(j.runs, res)
				fmt.Fprintf(progress, "%s (%v)\n", res.summary(), time.Since(t0).Round(time.Millisecond))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	failed := 0
	for _, j := range jobs {
		if j.err != nil {
			failed++
		}
		rep.add(j.s, j.size, median(j.runs), j.err)
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
		return fmt.Sprintf("%d round trips, p50 %s, p99 %s, p999 %s", r.Messages, micros(r.Percentile(50)), micros(r.Percentile(99)), micros(r.Percentile(99.9)))
	}
	if r.Publish == 0 {
		return fmt.Sprintf("%d msgs, consume %s/s", r.Messages, si(r.ConsumeRate()))
	}
	return fmt.Sprintf("%d msgs, publish %s/s, consume %s/s", r.Messages, si(r.PublishRate()), si(r.ConsumeRate()))
}
