package eventbus_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// selectRecorder is a membus connection that records the Select of every
// subscription opened through it.
type selectRecorder struct {
	driver.Driver
	mu   sync.Mutex
	seen map[string][]driver.AttributeMatch
}

func (r *selectRecorder) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	r.mu.Lock()
	r.seen[dest.Name] = slices.Clone(opts.Select)
	r.mu.Unlock()
	return r.Driver.Subscribe(ctx, dest, opts)
}

func (r *selectRecorder) selectOf(dest string) ([]driver.AttributeMatch, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.seen[dest]
	return s, ok
}

// sel builds a selection from name, value pairs.
func sel(pairs ...string) []driver.AttributeMatch {
	var out []driver.AttributeMatch
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, driver.AttributeMatch{Name: pairs[i], Value: pairs[i+1]})
	}
	return out
}

// TestBrokerSelectExtraction: the bus passes to the driver the Exact
// filters that the whole filter is a conjunction of, and nothing from under
// Any, Not or SQL, nor an Exact on type or on an empty value.
func TestBrokerSelectExtraction(t *testing.T) {
	type am = driver.AttributeMatch
	region, tenant := eventbus.Exact("region", "eu"), eventbus.Exact("tenant", "t1")
	cases := []struct {
		name    string
		filters []eventbus.Filter
		want    []am
	}{
		{"none", nil, nil},
		{"zero filter", []eventbus.Filter{{}}, nil},
		{"lone exact", []eventbus.Filter{region}, sel("region", "eu")},
		{"all of exacts and more", []eventbus.Filter{eventbus.All(region, eventbus.Prefix("subject", "a"), tenant, eventbus.SQL("subject = 'x'"))},
			sel("region", "eu", "tenant", "t1")},
		{"several WithFilter are a conjunction", []eventbus.Filter{region, eventbus.All(tenant, eventbus.Exact("subject", "s"))},
			sel("region", "eu", "tenant", "t1", "subject", "s")},
		{"type is the destination", []eventbus.Filter{eventbus.All(eventbus.Exact("type", "order.created"), region)}, sel("region", "eu")},
		{"empty value", []eventbus.Filter{eventbus.Exact("region", "")}, nil},
		{"first value of a repeated name", []eventbus.Filter{region, eventbus.Exact("region", "us")}, sel("region", "eu")},
		{"under any", []eventbus.Filter{eventbus.Any(region, tenant)}, nil},
		{"any within all", []eventbus.Filter{eventbus.All(tenant, eventbus.Any(region))}, sel("tenant", "t1")},
		{"under not", []eventbus.Filter{eventbus.Not(region)}, nil},
		{"not of all", []eventbus.Filter{eventbus.Not(eventbus.All(region, tenant))}, nil},
		{"sql", []eventbus.Filter{eventbus.SQL("region = 'eu'")}, nil},
		{"prefix and suffix", []eventbus.Filter{eventbus.Prefix("region", "eu"), eventbus.Suffix("tenant", "1")}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxT(t)
			broker := membus.New(nil)
			defer broker.Close(context.Background())
			rec := &selectRecorder{Driver: broker.Connect(), seen: map[string][]driver.AttributeMatch{}}
			b := startedBus(t, rec, nil)
			opts := make([]eventbus.SubscribeOption, 0, len(c.filters))
			for _, f := range c.filters {
				opts = append(opts, eventbus.WithFilter(f))
			}
			h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })
			_, err := b.SubscribeEvents(ctx, []string{"order.created"}, "billing", h, opts...)
			must(t, err)
			_, err = b.HandleCommand(ctx, "billing", "order.refund", h, opts...)
			must(t, err)
			_, err = b.SubscribeBroadcast(ctx, []string{"order.created"}, h, opts...)
			must(t, err)
			_, err = b.ProcessStream(ctx, "orders", "billing", eventbus.BatchHandlerFunc(func(context.Context, []*eventbus.Message) error { return nil }), nil, opts...)
			must(t, err)
			for dest, want := range map[string][]am{
				"events.order.created":          c.want,
				"commands.billing.order.refund": c.want,
				"broadcast.order.created":       nil,
				"streams.orders":                nil,
			} {
				got, ok := rec.selectOf(dest)
				if !ok {
					t.Fatalf("no subscription to %s", dest)
				}
				if !slices.Equal(got, want) {
					t.Errorf("Select on %s = %v, want %v", dest, got, want)
				}
			}
		})
	}
}
