package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// benchType is the type of the events the bench publishes; each run tells
// its own by their subject.
const benchType = "eventbus.bench"

type benchFlags struct {
	messages, size, roundTrips int
	embedded                   bool
}

func newBenchCmd(cf *connFlags, getenv func(string) string, client func(*cobra.Command) *cobra.Command) *cobra.Command {
	bf := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure event throughput and latency against the configured backend or the embedded default",
		Long: "Publishes events of type " + benchType + " and receives them in the same process, in two\n" +
			"phases: latency (--round-trips events one at a time: the time until the backend confirmed\n" +
			"the publish, and until the subscriber got it) and throughput (--messages events of --size\n" +
			"bytes through the pipelined Publisher, with a progress bar: publish and delivery rates).\n" +
			"It runs on --url, --config or $NATS_URL when given, else on the embedded default (an\n" +
			"in-process NATS server with JetStream in a temporary directory). A quick check, not a\n" +
			"benchmark: for comparable figures use the programs under bench/.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case bf.messages < 1 || bf.messages > 10_000_000:
				return usagef("--messages %d out of range; give 1 to 10000000", bf.messages)
			case bf.size < 0 || bf.size > 1<<20:
				return usagef("--size %d out of range; give 0 to 1048576 bytes", bf.size)
			case bf.roundTrips < 0 || bf.roundTrips > 100_000:
				return usagef("--round-trips %d out of range; give 0 to 100000", bf.roundTrips)
			}
			return runBench(cmd.Context(), cf, bf, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&bf.messages, "messages", 10000, "events of the throughput phase")
	f.IntVar(&bf.size, "size", 256, "payload bytes of each event")
	f.IntVar(&bf.roundTrips, "round-trips", 200, "events of the latency phase, published one at a time")
	client(cmd)
	// Without a backend named, the embedded default: decided before the
	// connection flags take their defaults.
	pre := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		bf.embedded = cf.url == "" && cf.configFile == "" && getenv("NATS_URL") == "" && getenv("EVENTBUS_CONFIG") == ""
		return pre(c, args)
	}
	return cmd
}

func runBench(ctx context.Context, cf *connFlags, bf *benchFlags, stdout, stderr io.Writer) (err error) {
	runID := newRunID()
	var received atomic.Int64
	got := make(chan struct{}, 1)
	handler := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if m.Subject == runID {
			received.Add(1)
			select {
			case got <- struct{}{}:
			default:
			}
		}
		return nil
	})
	subscribe := func(bus *eventbus.Bus) error {
		_, err := bus.SubscribeEvents(ctx, []string{benchType}, "", handler)
		return err
	}
	var bus *eventbus.Bus
	var target string
	if bf.embedded {
		dir, err := os.MkdirTemp("", "eventbus-bench-")
		if err != nil {
			return fmt.Errorf("cannot create a temporary directory: %w; set $TMPDIR to a writable directory", err)
		}
		defer os.RemoveAll(dir)
		if bus, err = eventbus.Open(ctx, natsbus.EmbeddedURL(filepath.Join(dir, "nats")), &eventbus.Options{Source: "eventbus-bench"}); err != nil {
			return fmt.Errorf("cannot start the embedded server: %w", err)
		}
		if err := subscribe(bus); err != nil {
			_ = bus.Close(context.WithoutCancel(ctx))
			return err
		}
		if err := bus.Start(ctx); err != nil {
			_ = bus.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("cannot start the bus: %w", err)
		}
		target = "the embedded default (in-process NATS server with JetStream)"
	} else {
		if bus, err = openBus(ctx, cf, "eventbus-bench", subscribe); err != nil {
			return err
		}
		target = cf.servers()
	}
	defer func() { err = closeBus(ctx, bus, err) }()
	fmt.Fprintf(stdout, "bench on %s\n", target)
	payload := []byte(`{"pad":"` + strings.Repeat("x", max(bf.size-10, 0)) + `"}`)

	// Latency: one event at a time.
	if bf.roundTrips > 0 {
		confirm := make([]time.Duration, 0, bf.roundTrips)
		deliver := make([]time.Duration, 0, bf.roundTrips)
		for i := 0; i < bf.roundTrips; i++ {
			want := received.Load() + 1
			m := newMessage(benchType, payload)
			m.Subject = runID
			began := time.Now()
			if err := bus.PublishEvent(ctx, m); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			confirm = append(confirm, time.Since(began))
			if err := waitCount(ctx, &received, got, want, 30*time.Second); err != nil {
				return err
			}
			deliver = append(deliver, time.Since(began))
		}
		fmt.Fprintf(stdout, "latency, %d events one at a time:\n  publish confirmed  %s\n  delivered          %s\n",
			bf.roundTrips, percentiles(confirm), percentiles(deliver))
	}

	// Throughput: pipelined publishes.
	base := received.Load()
	bar := newProgress(stderr, bf.messages, "delivered")
	pub := bus.NewPublisher(nil)
	began := time.Now()
	for i := 0; i < bf.messages; i++ {
		m := newMessage(benchType, payload)
		m.Subject = runID
		pub.PublishEvent(ctx, m)
	}
	if err := pub.Close(ctx); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	published := time.Since(began)
	want := base + int64(bf.messages)
	last := base
	for received.Load() < want {
		if err := waitCount(ctx, &received, got, received.Load()+1, 30*time.Second); err != nil {
			return fmt.Errorf("%d of %d events delivered: %w", received.Load()-base, bf.messages, err)
		}
		n := received.Load()
		bar.add(int(n - last))
		last = n
	}
	delivered := time.Since(began)
	bar.add(int(received.Load() - last))
	bar.done()
	fmt.Fprintf(stdout, "throughput, %d events of %d bytes through the pipelined Publisher:\n", bf.messages, len(payload))
	fmt.Fprintf(stdout, "  published  in %-10s %8.0f events/s\n", round(published), float64(bf.messages)/published.Seconds())
	fmt.Fprintf(stdout, "  delivered  in %-10s %8.0f events/s\n", round(delivered), float64(bf.messages)/delivered.Seconds())
	return nil
}

// waitCount waits until counter reaches want; got signals each increment.
func waitCount(ctx context.Context, counter *atomic.Int64, got <-chan struct{}, want int64, bound time.Duration) error {
	t := time.NewTimer(bound)
	defer t.Stop()
	for counter.Load() < want {
		select {
		case <-got:
		case <-t.C:
			return fmt.Errorf("no event arrived for %s; is the backend delivering? check it, or try the embedded default (no --url)", bound)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// percentiles formats p50, p90, p99 and the maximum of ds.
func percentiles(ds []time.Duration) string {
	slices.Sort(ds)
	at := func(p int) time.Duration { return ds[min(len(ds)-1, (len(ds)*p+99)/100-1)] }
	us := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", us(at(50)), us(at(90)), us(at(99)), us(ds[len(ds)-1]))
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "bench-" + hex.EncodeToString(b)
}
