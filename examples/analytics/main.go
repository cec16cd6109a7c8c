// Command analytics is a real-time analytics pipeline on the embedded
// default (an in-process NATS server with JetStream; nothing to install):
// a web tier appends page views to the stream analytics-events, keyed by
// user, and the consumer group analytics-processor processes them in
// batches, counting views per page and checking that each user's clicks
// arrive in the order they were made.
//
//	go run ./examples/analytics [-views 2000]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// PageView is one click.
type PageView struct {
	User string `json:"user"`
	Page string `json:"page"`
	Seq  int    `json:"seq"` // per user, from 1
}

// Report is what the pipeline computed.
type Report struct {
	Views      int
	PerPage    map[string]int
	Batches    int
	OutOfOrder int // clicks of a user that arrived before an earlier one
}

var pages = []string{"/", "/shoes", "/shoes/42", "/cart", "/checkout"}

func main() {
	views := flag.Int("views", 2000, "page views to publish")
	flag.Parse()
	dir, err := os.MkdirTemp("", "eventbus-analytics-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, dir, *views, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dataDir string, views int, out io.Writer) (*Report, error) {
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(dataDir), &eventbus.Options{Source: "web"})
	if err != nil {
		return nil, err
	}
	defer bus.Close(context.WithoutCancel(ctx))

	var mu sync.Mutex
	r := &Report{PerPage: map[string]int{}}
	lastSeq := map[string]int{}
	finished := make(chan struct{})
	_, err = bus.ProcessStream(ctx, "analytics-events", "analytics-processor",
		eventbus.TypedBatch(func(ctx context.Context, ms []*eventbus.Message, vs []PageView) error {
			mu.Lock()
			defer mu.Unlock()
			r.Batches++
			for _, v := range vs {
				if v.Seq <= lastSeq[v.User] {
					r.OutOfOrder++
				}
				lastSeq[v.User] = v.Seq
				r.PerPage[v.Page]++
				r.Views++
			}
			if r.Views == views {
				close(finished)
			}
			return nil // the whole batch is acked only now
		}),
		&eventbus.BatchOptions{Size: 100, MaxWait: 50 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	if err := bus.Start(ctx); err != nil {
		return nil, err
	}

	began := time.Now()
	const users = 25
	seq := map[string]int{}
	batch := make([]*eventbus.Message, 0, 100)
	for i := range views {
		user := fmt.Sprintf("user-%02d", i%users)
		seq[user]++
		m, err := bus.NewMessage("page.viewed", PageView{User: user, Page: pages[(i/users+i)%len(pages)], Seq: seq[user]})
		if err != nil {
			return nil, err
		}
		m.Key = user // one user's clicks keep their order
		if batch = append(batch, m); len(batch) == cap(batch) || i == views-1 {
			if err := bus.PublishStream(ctx, "analytics-events", batch...); err != nil {
				return nil, err
			}
			batch = batch[:0]
		}
	}
	select {
	case <-finished:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the pipeline: %w", ctx.Err())
	}
	took := time.Since(began)
	mu.Lock()
	defer mu.Unlock()
	keys := make([]string, 0, len(r.PerPage))
	for p := range r.PerPage {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	for _, p := range keys {
		fmt.Fprintf(out, "%-10s %5d views\n", p, r.PerPage[p])
	}
	fmt.Fprintf(out, "%d views of %d users in %d batches, %s (%.0f views/s); %d out of order\n",
		r.Views, users, r.Batches, took.Round(time.Millisecond), float64(r.Views)/took.Seconds(), r.OutOfOrder)
	return r, nil
}
