// Command patterns runs the same workload — n messages — over every
// messaging pattern and prints, for each, who received how many and what
// the pattern guarantees: a side-by-side comparison to choose from.
//
// It runs on the embedded server (started in this process, on a free port;
// nothing to install), or on any backend by URL:
//
//	go run ./examples/patterns
//	go run ./examples/patterns -url nats://127.0.0.1:4222
//	go run ./examples/patterns -url 'kafka://127.0.0.1:9092'
//
// Every pattern has two receivers, each on a bus of its own as two service
// instances would be: two consumer groups for events, two instances of one
// service for commands and queries, two members of one group for the
// stream, two instances for broadcasts.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/marty-msf/eventbus"
	_ "github.com/marty-msf/eventbus/awsbus"
	_ "github.com/marty-msf/eventbus/kafkabus"
	_ "github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
	_ "github.com/marty-msf/eventbus/rabbitbus"
	_ "github.com/marty-msf/eventbus/redisbus"
)

// Row is one pattern's result.
type Row struct {
	Pattern   string
	Receivers [2]int // messages each receiver handled
	Replies   int    // queries only
	InOrder   bool   // every key's messages arrived in order
	Took      time.Duration
	Guarantee string
}

func main() {
	url := flag.String("url", "", "backend URL (default: the embedded server in a temporary directory)")
	n := flag.Int("n", 200, "messages per pattern")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if *url == "" {
		// An empty DataDir is a temporary one, removed at Shutdown.
		srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1})
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Shutdown(context.WithoutCancel(ctx))
		*url = srv.ClientURL()
	}
	if _, err := run(ctx, *url, *n, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// Item is the workload's payload.
type Item struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// receivers counts what each of two receivers handled and checks the order
// per key.
type receivers struct {
	mu      sync.Mutex
	counts  [2]int
	last    map[string]int
	inOrder bool
	total   int
	want    int
	done    chan struct{}
}

func newReceivers(want int) *receivers {
	return &receivers{last: map[string]int{}, inOrder: true, want: want, done: make(chan struct{})}
}

func (r *receivers) got(i int, it Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[i]++
	if it.Seq <= r.last[fmt.Sprint(i, it.Key)] {
		r.inOrder = false
	}
	r.last[fmt.Sprint(i, it.Key)] = it.Seq
	if r.total++; r.total == r.want {
		close(r.done)
	}
}

func run(ctx context.Context, url string, n int, out io.Writer) ([]Row, error) {
	var instances [2]*eventbus.Bus
	for i := range instances {
		b, err := eventbus.Open(ctx, url, &eventbus.Options{Source: fmt.Sprintf("patterns-%d", i+1)})
		if err != nil {
			return nil, err
		}
		defer b.Close(context.WithoutCancel(ctx))
		instances[i] = b
	}
	bus := instances[0] // the sender

	events, commands, stream, broadcasts := newReceivers(2*n), newReceivers(n), newReceivers(n), newReceivers(2*n)
	queriesHandled := newReceivers(n)
	for i, b := range instances {
		group := []string{"billing", "analytics"}[i]
		if _, err := b.SubscribeEvents(ctx, []string{"item.added"}, group, handler(events, i)); err != nil {
			return nil, err
		}
		if _, err := b.HandleCommand(ctx, "worker", "item.process", handler(commands, i)); err != nil {
			return nil, err
		}
		if _, err := b.HandleQuery(ctx, "catalog", "item.get",
			eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, it Item) (int, error) {
				queriesHandled.got(i, it)
				return it.Seq, nil
			})); err != nil {
			return nil, err
		}
		if _, err := b.ProcessStream(ctx, "items", "indexer",
			eventbus.TypedBatch(func(ctx context.Context, ms []*eventbus.Message, its []Item) error {
				for _, it := range its {
					stream.got(i, it)
				}
				return nil
			}), &eventbus.BatchOptions{Size: 50, MaxWait: 20 * time.Millisecond}); err != nil {
			return nil, err
		}
		if _, err := b.SubscribeBroadcast(ctx, []string{"item.announced"}, handler(broadcasts, i)); err != nil {
			return nil, err
		}
		if err := b.Start(ctx); err != nil {
			return nil, err
		}
	}

	var rows []Row
	measure := func(pattern, guarantee string, r *receivers, send func(*eventbus.Message) error) error {
		began := time.Now()
		for seq := 1; seq <= n; seq++ {
			it := Item{Key: fmt.Sprintf("k%d", seq%4), Seq: seq}
			m, err := bus.NewMessage("item", it)
			if err != nil {
				return err
			}
			m.Key = it.Key
			if err := send(m); err != nil {
				return fmt.Errorf("%s: %w", pattern, err)
			}
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("%s: %d of %d delivered: %w", pattern, r.total, r.want, ctx.Err())
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		rows = append(rows, Row{Pattern: pattern, Receivers: r.counts, InOrder: r.inOrder, Took: time.Since(began), Guarantee: guarantee})
		return nil
	}
	steps := []struct {
		pattern, guarantee string
		r                  *receivers
		send               func(*eventbus.Message) error
	}{
		{"pub/sub", "every group gets every event; persisted; at-least-once", events,
			func(m *eventbus.Message) error { m.Type = "item.added"; return bus.PublishEvent(ctx, m) }},
		{"point-to-point", "one instance handles each command; persisted; at-least-once", commands,
			func(m *eventbus.Message) error { m.Type = "item.process"; return bus.SendCommand(ctx, "worker", m) }},
		{"request/response", "one instance answers; reply or typed error; not persisted", queriesHandled,
			func(m *eventbus.Message) error {
				m.Type = "item.get"
				_, err := bus.Query(ctx, "catalog", m)
				return err
			}},
		{"streaming", "one member of the group per batch; ordered per key; acked per batch", stream,
			func(m *eventbus.Message) error { m.Type = "item.indexed"; return bus.PublishStream(ctx, "items", m) }},
		{"broadcast", "every running instance; not persisted", broadcasts,
			func(m *eventbus.Message) error { m.Type = "item.announced"; return bus.Broadcast(ctx, m) }},
	}
	for _, s := range steps {
		if err := measure(s.pattern, s.guarantee, s.r, s.send); err != nil {
			return nil, err
		}
	}
	rows[2].Replies = n

	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "pattern\treceiver 1\treceiver 2\tkeys in order\ttime\tguarantee\n")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%d\t%v\t%s\t%s\n", r.Pattern, r.Receivers[0], r.Receivers[1], r.InOrder, r.Took.Round(time.Millisecond), r.Guarantee)
	}
	fmt.Fprintf(w, "\n%d messages per pattern on %s\n", n, bus.Backends()[0])
	return rows, w.Flush()
}

// handler counts what receiver i handled.
func handler(r *receivers, i int) eventbus.Handler {
	return eventbus.Typed(func(ctx context.Context, m *eventbus.Message, it Item) error {
		r.got(i, it)
		return nil
	})
}
